"""Does MiniVLA carry the block to where it sees the destination, or along a memorised path?

    MUJOCO_GL=egl python examples/destination_sensitivity.py --seeds 4

Runs the policy closed loop on pick-and-place tasks (development seeds, not the reporting ones). At
every step where it holds the target, the destination entry of the pointer its action head reads (the
policy's own estimate of where the tray or plate is, in image coordinates) is moved by ``--shift``
along each image axis of the agent-view camera, and the decoded xy action is read again. The printed
sensitivity is the mean change of the xy action (action units; 1 = 3 cm per step) per pointer shift:
a policy that places by looking turns its carry toward the moved destination; one that replays a
memorised path barely moves. Next to it, each episode's placement error: how far from the destination
the target ended (m).
"""

from __future__ import annotations

import argparse

import numpy as np

import envs
from arrcoc_steer.eval import fresh_seeds
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, POINTED, MiniVLA

TASKS = ["PutRedBlockInTray", "PutRedBlockOnPlate", "PickRedBlockIntoTray", "PickRightBlockIntoTray"]
DESTINATION = POINTED.index(3)  # pointer row of the destination class


def xy_response(model: MiniVLA, obs: dict, budget: int, shift: float) -> float:
    """Mean |change of the xy action| when the agent-view destination pointer moves by +-shift in x and y."""
    out, state, _ = model.observe(obs, obs["instruction"], budget)
    base = model.decode_actions(out.action_logits, state)[0, :2]
    changes = []
    for axis in (0, 1):
        for sign in (-1, 1):
            moved = out.pointer.float().clone()
            moved[0, 0, DESTINATION, axis] += sign * shift
            moved[0, 0, DESTINATION, 2] = 1.0  # present
            probe, _, _ = model.observe(obs, obs["instruction"], budget, pointer=moved)
            changes.append(np.abs(model.decode_actions(probe.action_logits, state)[0, :2] - base).sum())
    return float(np.mean(changes))


def run(model: MiniVLA, task: str, seed: int, budget: int, shift: float, max_steps: int | None) -> dict:
    env = envs.make(task)
    try:
        obs, info = env.reset(seed=seed)
        target, dest = info["target_object"], info["destination"]
        responses, done, t = [], False, 0
        while not done and (max_steps is None or t < max_steps):
            if info.get("grasped") == target:
                responses.append(xy_response(model, obs, budget, shift))
            obs, _, terminated, truncated, info = env.step(model.predict_action(obs, obs["instruction"], budget=budget))
            done, t = terminated or truncated, t + 1
        error = float(np.linalg.norm(info["object_poses"][target][:2] - info["object_poses"][dest][:2]))
        return {"task": task, "seed": seed, "success": bool(info["success"]), "placement_error": error,
                "carry_steps": len(responses), "sensitivity": float(np.mean(responses)) if responses else float("nan")}  # fmt: skip
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(DEFAULT_CHECKPOINT), help="MiniVLA checkpoint (default: the shipped one)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--seed-base", type=int, default=7_000_000, help="development seeds, apart from the reporting ones")
    p.add_argument("--shift", type=float, default=0.25, help="pointer shift, as a fraction of the image")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--max-steps", type=int, help="cap on episode length")
    args = p.parse_args(argv)

    model = MiniVLA.from_pretrained(args.policy)
    rows = [run(model, task, seed, args.budget, args.shift, args.max_steps)
            for task in args.tasks for seed in fresh_seeds(args.seeds, args.seed_base)]  # fmt: skip
    print(f"{'task':<26}{'seed':>9}{'success':>9}{'placement error (m)':>21}{'carry steps':>13}{'sensitivity':>13}")
    for r in rows:
        print(f"{r['task']:<26}{r['seed']:>9}{r['success']!s:>9}{r['placement_error']:>21.3f}{r['carry_steps']:>13}{r['sensitivity']:>13.3f}")
    carried = [r["sensitivity"] for r in rows if r["carry_steps"]]
    print(f"mean xy-action change per {args.shift:g} destination shift while carrying: "
          f"{np.mean(carried) if carried else float('nan'):.3f} ({len(carried)} of {len(rows)} episodes carried the target)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
