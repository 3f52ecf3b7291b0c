"""Episodes per minute of a sweep with 1 worker and with N workers, and the speed-up (same jobs).

    MUJOCO_GL=egl python benchmarks/bench_eval.py                       # expert, no rendering
    MUJOCO_GL=egl python benchmarks/bench_eval.py --render              # both 128 px cameras, as a VLA needs
    MUJOCO_GL=egl python benchmarks/bench_eval.py --backend ray --workers 2
    MUJOCO_GL=egl python benchmarks/bench_eval.py --policy arrcoc_steer/checkpoints/minivla --episodes 4 --max-steps 10

One worker runs in this process (the baseline); N workers are a spawn process pool (or Ray actors),
timed from the call to the last result, start-up included. Each setting runs ``--repeats`` times
with fresh seeds; the median is reported. The records of both runs are checked to be identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from arrcoc_steer.eval import ExpertPolicy, Prompt, evaluate  # noqa: E402


class RenderingExpert(ExpertPolicy):
    """The expert, but the env renders both cameras every step as it would for a VLA."""

    requires_images = True


def run(policy, args, workers: int, backend: str, seeds: list[int]) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        r = evaluate(policy, args.tasks, ["unsteered", Prompt(modifier="quickly")], seeds, out, progress=False,
                     backend="serial" if workers == 1 else backend, workers=workers, max_steps=args.max_steps)
        wall = time.perf_counter() - start
    rows = sorted((x["task"], x["condition"], x["seed"], x["length"], x["speed_mean"]) for x in r.rows)
    return len(r.rows) / wall * 60, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default="expert", help="'expert' or a MiniVLA checkpoint directory")
    p.add_argument("--tasks", nargs="+", default=["LiftRedBlock", "PutRedBlockInTray"])
    p.add_argument("--episodes", type=int, default=16, help="episodes per task and condition")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--render", action="store_true", help="render both cameras (the expert needs none)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    policy = RenderingExpert() if args.render and args.policy == "expert" else args.policy
    if args.policy == "expert" and not args.render:
        policy = ExpertPolicy()
    n = len(args.tasks) * 2 * args.episodes
    print(f"{n} episodes per run ({len(args.tasks)} tasks x 2 conditions x {args.episodes} seeds), "
          f"policy={args.policy}, render={args.render or args.policy != 'expert'}, cpus={os.cpu_count()}")
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    for rep in range(args.repeats):
        seeds = list(range(2_000_000 + rep * args.episodes, 2_000_000 + (rep + 1) * args.episodes))
        one, rows_one = run(policy, args, 1, args.backend, seeds)
        many, rows_many = run(policy, args, args.workers, args.backend, seeds)
        assert rows_one == rows_many, "1 worker and N workers gave different records"
        rates[1].append(one)
        rates[args.workers].append(many)
        print(f"  repeat {rep}: 1 worker {one:7.1f} ep/min, {args.workers} workers ({args.backend}) {many:7.1f} ep/min")
    a, b = statistics.median(rates[1]), statistics.median(rates[args.workers])
    print(f"median: 1 worker {a:.1f} episodes/min; {args.workers} workers {b:.1f} episodes/min; "
          f"speed-up {b / a:.2f}x (identical records)")


if __name__ == "__main__":
    main()
