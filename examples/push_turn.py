"""Does a push fail where the hand must turn? Each push episode of a run beside the yaw turn it needs.

    MUJOCO_GL=egl python examples/push_turn.py runs/minivla_success [more run folders ...]

The scripted expert pushes with the finger pads facing the push (block -> zone), so before it descends
it turns the hand from its start yaw to the push direction, taken modulo 180 degrees (the two-fingered
hand faces a push either way round). This script resets each PushRedBlockToZone episode of the run
folders' results.csv (same seed, same scene), computes that turn, and prints the episodes sorted by it
with their outcomes, then success below and above the median turn. The README's push paragraph quotes it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

import envs
from envs.expert import ScriptedExpert, _wrap, _yaw_of

TASK = "PushRedBlockToZone"


def needed_turn(env, seed: int) -> tuple[float, float]:
    """(|turn| in rad from the start yaw to the push yaw, push direction in rad) of the episode ``seed``."""
    env.reset(seed=seed)
    u = env.unwrapped
    d = u.object_pose("zone")[:2] - u.object_pose("red_block")[:2]
    target_yaw = ScriptedExpert._push_yaw(d)  # the expert's own rule: the push direction mod 180 degrees
    return abs(_wrap(target_yaw - _yaw_of(u.ee_quat()), 2 * np.pi)), float(np.arctan2(d[1], d[0]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="eval or sweep run folders (their results.csv)")
    p.add_argument("--condition", help="only this condition's episodes (default: all)")
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        if not (run / "results.csv").is_file():
            p.error(f"{run} has no results.csv (an arrcoc-steer eval or sweep folder is needed)")
        rows += [r for r in csv.DictReader((run / "results.csv").read_text().splitlines())
                 if r["task"] == TASK and (args.condition is None or r["condition"] == args.condition)]  # fmt: skip
    if not rows:
        p.error(f"no {TASK} episodes in {[str(r) for r in args.runs]}")
    env = envs.make(TASK, render_cameras=False)
    try:
        table = sorted((*needed_turn(env, int(r["seed"])), float(r["success"]), r["outcome"], r["condition"], r["seed"])
                       for r in rows)  # fmt: skip
    finally:
        env.close()
    print(f"{'|turn| rad':>10}  {'push dir':>8}  success  outcome (condition, seed)")
    for turn, direction, success, outcome, condition, seed in table:
        print(f"{turn:>10.2f}  {direction:>+8.2f}  {int(success):>7}  {outcome} ({condition}, {seed})")
    turns, wins = np.array([t[0] for t in table]), np.array([t[2] for t in table])
    median = float(np.median(turns))
    below, above = wins[turns < median], wins[turns >= median]
    print(f"median turn {median:.2f} rad: success {below.mean():.0%} below it (n={len(below)}), "
          f"{above.mean():.0%} at or above (n={len(above)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
