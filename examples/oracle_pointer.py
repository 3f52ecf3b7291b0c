"""How much of MiniVLA's failure is perception? The same episodes with its own pointer and with the truth.

    MUJOCO_GL=egl python examples/oracle_pointer.py --tasks object spatial --seeds 3

The action head reads a pointer: where the policy believes the gripper, the target and the destination
are in each camera (the token-softmax centroids of its grounding). Each episode runs twice from the same
seed: once as shipped, once with that pointer replaced at every step by the one the simulator's
segmentation implies (the pointer the grounding is trained toward). An episode the oracle wins and the
policy loses is a perception failure (it looked at the wrong block, or in the wrong place); one both lose
fails in control. Printed per episode: success both ways and the policy's agent-view target-pointer
error (mean |dx|, |dy| as a fraction of the image, over the first ``--error-steps`` steps, while it
chooses which block to reach; frames where the target is out of view are left out, as in
:func:`~arrcoc_steer.models.pointing.agent_view_error`). Development seeds by default, apart from the
reporting ones.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import envs
from arrcoc_steer.eval import fresh_seeds
from arrcoc_steer.eval.sweep import resolve_tasks
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, MiniVLA
from arrcoc_steer.models.pointing import agent_view_error, scene_pointer


def run(model: MiniVLA, task: str, seed: int, oracle: bool, budget: int, error_steps: int, max_steps: int | None) -> dict:
    """One episode; ``oracle``: the action head reads the segmentation's pointer instead of its own."""
    env = envs.make(task)
    try:
        obs, info = env.reset(seed=seed)
        errors, done, t = [], False, 0
        while not done and (max_steps is None or t < max_steps):
            truth = None
            if oracle or t < error_steps:  # the segmentation, only where it is read
                truth = scene_pointer(env, model.grid_cameras)
            out, state, _ = model.observe(obs, obs["instruction"], budget, pointer=truth if oracle else None)
            if t < error_steps:
                own = out.pointer if not oracle else model.observe(obs, obs["instruction"], budget)[0].pointer
                errors.append(float(agent_view_error(own, truth, "target")[0]))
            obs, _, terminated, truncated, info = env.step(model.decode_actions(out.action_logits, state)[0])
            done, t = terminated or truncated, t + 1
        seen = [e for e in errors if e == e]  # NaN: the target was out of view
        return {"success": bool(info["success"]), "target_error": float(np.mean(seen)) if seen else float("nan")}
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(DEFAULT_CHECKPOINT), help="MiniVLA checkpoint (default: the shipped one)")
    p.add_argument("--tasks", nargs="+", default=["object", "spatial"], help="task names, suite names or 'all'")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=7_000_000, help="development seeds, apart from the reporting ones")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--error-steps", type=int, default=30, help="steps over which the target-pointer error is averaged")
    p.add_argument("--max-steps", type=int, help="cap on episode length")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # as the eval harness runs policies: the same rounding, hence the same paths
    model = MiniVLA.from_pretrained(args.policy)
    print(f"{'task':<32}{'seed':>9}{'own pointer':>13}{'true pointer':>14}{'target error':>14}")
    rows = []
    for task in resolve_tasks(args.tasks):
        for seed in fresh_seeds(args.seeds, args.seed_base):
            own = run(model, task, seed, False, args.budget, args.error_steps, args.max_steps)
            oracle = run(model, task, seed, True, args.budget, args.error_steps, args.max_steps)
            rows.append((own["success"], oracle["success"], own["target_error"]))
            print(f"{task:<32}{seed:>9}{own['success']!s:>13}{oracle['success']!s:>14}{own['target_error']:>14.3f}", flush=True)
    own, oracle, error = (np.array(c) for c in zip(*rows))
    n = len(rows)
    print(f"success: own pointer {own.sum()}/{n}, true pointer {oracle.sum()}/{n} "
          f"({(oracle & ~own).sum()} gained, {(own & ~oracle).sum()} lost)")  # fmt: skip
    for name, sel in (("episodes the true pointer wins", oracle & ~own), ("all other episodes", ~(oracle & ~own))):
        if sel.any():
            print(f"mean target-pointer error, {name}: {np.nanmean(error[sel]):.3f} of the image ({sel.sum()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
