"""Open-loop effects of steers on expert states: what a steer does to the decoded action before the
closed loop compounds it. Reads a folder written by ``steering_effects.py``.

    python examples/open_loop_effects.py --run runs/steering

1. The "quickly" map at strengths 0.25 .. 1 under each of MiniVLA's decodings: mean speed of the
   translation actions, and dz on the frames where the unsteered policy descends (dz < -0.3). Under
   ``mean`` decoding, half-way activations spread each query's bin distribution and its mean falls
   toward zero: the descent stalls.
2. The concepts found through the action head at their calibrated strengths: speed, the part of it
   along the unsteered direction, the mean dz drift and the largest gripper change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from arrcoc_steer.concepts import load_concepts
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, load_policy
from arrcoc_steer.policy_steering import observations
from arrcoc_steer.steering import Calibration, Intervention, ResidualMap, Steerer

TASKS = ["LiftRedBlock", "PickRedBlockIntoTray", "PickLeftBlockIntoTray", "PutRedBlockOnPlate"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/steering", help="folder written by steering_effects.py")
    p.add_argument("--policy", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0], help="action-concept strengths")
    p.add_argument("--per-task", type=int, default=16, help="expert states per task (every second step)")
    args = p.parse_args(argv)
    run = Path(args.run)
    policy = load_policy(args.policy)
    states = observations(TASKS, per_task=args.per_task, seed=500, every=2)

    def actions() -> np.ndarray:
        return np.array([policy.predict_action(s["obs"], s["instruction"], budget=64) for s in states])

    def speed(a: np.ndarray) -> float:
        return float(np.linalg.norm(a[:, :3], axis=1).mean())

    print(f"{len(states)} expert states of {', '.join(TASKS)}")
    quickly = ResidualMap.load(run / "map_quickly.safetensors")
    decode = policy.config.decode
    try:
        for rule in ("mean", "local_mean", "argmax"):
            policy.config.decode = rule
            base = actions()
            down = base[:, 2] < -0.3

            def dz(a: np.ndarray) -> str:
                return f"dz {a[down, 2].mean():+.2f}" if down.any() else "no descending state"

            cells = []
            for s in (0.25, 0.5, 0.75, 1.0):
                with Steerer(policy, [quickly.with_strength(s)]):
                    a = actions()
                cells.append(f"{s:g}: {speed(a) / speed(base) - 1:+.0%}, {dz(a)}")
            print(f"map 'quickly', decode={rule:<10} unsteered {dz(base)} | " + " | ".join(cells))
    finally:
        policy.config.decode = decode

    base = actions()
    rising, falling = base[:, 2] > 0.05, base[:, 2] < -0.05

    def dz_change(a: np.ndarray, where: np.ndarray) -> str:
        return f"{(a[where, 2] - base[where, 2]).mean():+.3f}" if where.any() else "n/a"

    calibration = Calibration.load(run / "calibration.safetensors")
    for name, concept in load_concepts(run / "concepts_action.yaml").items():
        for alpha in args.alphas:
            steer = Intervention.from_concept(concept, alpha, unit="calibrated", positions="action")
            with Steerer(policy, [steer], calibration=calibration):
                a = actions()
            along = np.sum(a[:, :3] * base[:, :3], 1) / np.linalg.norm(base[:, :3], axis=1).clip(1e-6)
            print(f"action concept {name!r} at {alpha:g}: speed {speed(a) / speed(base) - 1:+.1%}, along the "
                  f"unsteered direction {along.mean() / speed(base) - 1:+.1%}, dz change where the arm rises "
                  f"{dz_change(a, rising)} / descends {dz_change(a, falling)}, largest gripper change "
                  f"{np.abs(a[:, 6] - base[:, 6]).max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
