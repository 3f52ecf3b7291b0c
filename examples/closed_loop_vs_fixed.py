"""Closed-loop steering against fixed strengths: who holds a +30% speed target, and at what cost?

    MUJOCO_GL=egl python examples/closed_loop_vs_fixed.py --seeds 17 --out runs/closed_loop

The knob is the scripted expert's own translation gain (``ExpertPolicy.set_strength``: speed x
2**alpha), so the comparison isolates the controller from how well a learned policy steers. Fixed
strengths run through the same code path as the loop (a controller pinned to one alpha). For every
condition, paired with the unsteered expert on the same tasks and seeds: the length-controlled
speed ratio, its spread across episodes, the share of episodes within +-10% of the target, and
success. The fixed alpha whose mean effect is closest to the loop's is marked.
"""

from __future__ import annotations

import argparse

import numpy as np

from arrcoc_steer.control import ControllerConfig
from arrcoc_steer.eval import ClosedLoop, ExpertPolicy, evaluate

TASKS = ["LiftRedBlock", "PutRedBlockInTray", "PushRedBlockToZone"]


def fixed(alpha: float) -> ClosedLoop:
    pinned = ControllerConfig(target_ratio=1.3, alpha_init=alpha, alpha_min=alpha, alpha_max=alpha)
    return ClosedLoop(name=f"fixed_alpha_{alpha:g}", controller=pinned)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/closed_loop")
    p.add_argument("--seeds", type=int, default=17, help="fresh seeds per task (17 x 3 tasks = 51 episodes per condition)")
    p.add_argument("--target", type=float, default=1.3, help="speed to hold, as a multiple of the unsteered speed")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 1.5, 2.0], help="fixed strengths")
    p.add_argument("--alpha-init", type=float, default=0.4, help="the loop's starting strength (a feed-forward guess)")
    p.add_argument("--ki", type=float, default=0.3, help="the loop's integral gain")
    p.add_argument("--workers", type=int)
    args = p.parse_args(argv)

    loop = ClosedLoop(name="closed_loop", controller=ControllerConfig(
        target_ratio=args.target, alpha_init=args.alpha_init, ki=args.ki, alpha_min=-1.0, alpha_max=2.0))
    conditions = ["unsteered", loop, *(fixed(a) for a in args.alphas)]
    r = evaluate(ExpertPolicy(), TASKS, conditions, seeds=args.seeds, out_dir=args.out, workers=args.workers)

    base = {(x["task"], x["seed"]): x["speed_w"] for x in r.rows if x["condition"] == "unsteered"}
    rows = {}
    for cond in [c if isinstance(c, str) else c.name for c in conditions[1:]]:
        eps = [x for x in r.rows if x["condition"] == cond]
        ratio = np.array([x["speed_w"] / base[(x["task"], x["seed"])] for x in eps])
        rows[cond] = (ratio.mean(), ratio.std(), np.mean(np.abs(ratio / args.target - 1) <= 0.1), np.mean([x["success"] for x in eps]))
    matched = min((c for c in rows if c != "closed_loop"), key=lambda c: abs(rows[c][0] - rows["closed_loop"][0]))
    print(f"target: {args.target:.2f}x the unsteered speed; unsteered success "
          f"{np.mean([x['success'] for x in r.rows if x['condition'] == 'unsteered']):.0%}; {len(base)} paired episodes")  # fmt: skip
    print(f"{'condition':<22}{'speed ratio':>12}{'sd':>8}{'in +-10%':>10}{'success':>9}")
    for cond, (mean, sd, band, success) in rows.items():
        mark = "  <- fixed alpha with the loop's mean effect" if cond == matched else ""
        print(f"{cond:<22}{mean:>11.2f}x{sd:>8.2f}{band:>10.0%}{success:>9.0%}{mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
