"""Follow one MiniVLA episode step by step: what it believes, what is true, what it does.

    MUJOCO_GL=egl python examples/trace_episode.py --task PutBothBlocksInTray --seed 7000002 --every 10

Every ``--every`` steps, one line: the current subgoal (the first not yet done: what the grounding is
trained to call target and destination), the end-effector position, the decoded gripper command and
P(open), and for the target and the destination the policy's pointer in one camera (expected x, y as
image fractions, and presence) beside the one the simulator's segmentation implies. Where the two part
is where perception fails; where they agree and the arm still goes elsewhere, control does. A line is
also printed at the first step of each subgoal. The README's second-step traces come from this script.

``--actions`` adds, under each line, the policy's decoded motion beside what the scripted expert would
do from the same state (a fresh expert, replanned from the scene: its phase and action), and how each
motion dimension's bins split between the two directions: P(< -0.1) / P(> +0.1). Where both sides hold
mass the expectation decodes to ~0 (the README's push trace).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import envs
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, GRIPPER_DIM, GROUNDING_CLASSES, POINTED, MiniVLA
from arrcoc_steer.models.pointing import scene_pointer
from arrcoc_steer.regions import CAMERAS
from envs.expert import ScriptedExpert
from envs.grounding import current_subgoal

SHOWN = {name: POINTED.index(GROUNDING_CLASSES.index(name)) for name in ("target", "destination")}  # pointer axis
MOTION = {"dx": 0, "dy": 1, "dz": 2, "dyaw": 5}  # the action dimensions --actions prints


def fmt(p: np.ndarray) -> str:
    return f"({p[0]:.2f}, {p[1]:.2f}) {p[2]:.2f}"


def action_line(model: MiniVLA, logits: torch.Tensor, action: np.ndarray, env) -> str:
    """Policy motion | the replanned expert's, and each motion dimension's bin mass on either side."""
    expert = ScriptedExpert(env)
    expert.replan()
    wanted = expert.act(None)
    centers = torch.as_tensor(model.action_tokenizer.centers, dtype=torch.float32)
    probs = logits[0].float().softmax(-1)
    cells = []
    for name, d in MOTION.items():
        neg, pos = float(probs[d, centers < -0.1].sum()), float(probs[d, centers > 0.1].sum())
        cells.append(f"{name} {action[d]:+.2f} | {wanted[d]:+.2f} ({neg:.2f}/{pos:.2f})")
    return f"{'':>6}policy | expert '{expert.phase}' (bins < -0.1 / > +0.1): " + ", ".join(cells)


def trace(model: MiniVLA, task: str, seed: int, budget: int, every: int, camera: str, max_steps: int | None,
          actions: bool = False) -> list[dict]:  # fmt: skip
    """Run the episode; print and return one record per printed step."""
    cam = CAMERAS.index(camera)
    env = envs.make(task)
    records = []
    try:
        obs, info = env.reset(seed=seed)
        print(f"{task} seed {seed}: {obs['instruction']!r} ({budget} tokens, pointers in the {camera} camera: "
              f"(x, y) presence, policy | truth)")  # fmt: skip
        print(f"{'t':>4}  {'subgoal':<24}{'ee x, y, z':<22}{'grip':>6}{'P(open)':>9}  "
              f"{'target: policy | truth':<38}{'destination: policy | truth'}")  # fmt: skip
        done, t, seen = False, 0, set()
        while not done and (max_steps is None or t < max_steps):
            out, state, _ = model.observe(obs, obs["instruction"], budget)
            action = model.decode_actions(out.action_logits, state)[0]
            goal = current_subgoal(env.unwrapped).describe()
            if t % every == 0 or goal not in seen:
                own, truth = out.pointer[0, cam].numpy(), scene_pointer(env, model.grid_cameras)[0, cam].numpy()
                rec = {"t": t, "subgoal": goal, "ee": state[0, :3].numpy().copy(), "grip": float(action[GRIPPER_DIM]),
                       "p_open": float(model.release_probability(out.action_logits)[0]),
                       **{f"{k}_{w}": p[i] for k, i in SHOWN.items() for w, p in (("policy", own), ("truth", truth))}}  # fmt: skip
                records.append(rec)
                ee = ", ".join(f"{v:+.3f}" for v in rec["ee"])
                print(f"{t:>4}  {goal:<24}{ee:<22}{rec['grip']:>+6.2f}{rec['p_open']:>9.2f}  "
                      f"{fmt(rec['target_policy']) + ' | ' + fmt(rec['target_truth']):<38}"
                      f"{fmt(rec['destination_policy'])} | {fmt(rec['destination_truth'])}", flush=True)  # fmt: skip
                if actions:
                    print(action_line(model, out.action_logits, action, env), flush=True)
            seen.add(goal)
            obs, _, terminated, truncated, info = env.step(action)
            done, t = terminated or truncated, t + 1
        print(f"success: {bool(info['success'])} after {t} steps (subgoals done: {info['subgoals_done']})")
        return records
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(DEFAULT_CHECKPOINT), help="MiniVLA checkpoint (default: the shipped one)")
    p.add_argument("--task", required=True, help="task name (arrcoc-steer envs lists them)")
    p.add_argument("--seed", type=int, default=7_000_000, help="episode seed (default: the first development seed)")
    p.add_argument("--budget", type=int, default=400, help="visual tokens, uniform allocation (default: %(default)s)")
    p.add_argument("--every", type=int, default=10, help="print every N steps (default: %(default)s)")
    p.add_argument("--camera", choices=CAMERAS, default="agentview", help="whose pointers to print")
    p.add_argument("--max-steps", type=int, help="cap on episode length")
    p.add_argument("--actions", action="store_true",
                   help="also print the policy's motion beside the replanned expert's, with each dimension's bin split")
    args = p.parse_args(argv)
    if args.every < 1:
        p.error(f"--every must be >= 1, got {args.every}")
    envs.get_task(args.task)  # an unknown name fails here, naming the known ones

    torch.set_num_threads(1)  # as the eval harness runs policies: the same rounding, hence the same episode
    trace(MiniVLA.from_pretrained(args.policy), args.task, args.seed, args.budget, args.every, args.camera, args.max_steps,
          args.actions)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
