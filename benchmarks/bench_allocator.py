"""Forward passes through MiniVLA with glibc's default malloc against the CLI's setting
(:func:`arrcoc_steer.allocator.keep_freed_memory`): frames per second and page faults, as ratios.

    python benchmarks/bench_allocator.py [--batches 64 256] [--budget 155] [--frames 512] [--rounds 2]

What is timed is what building a ``--head-cache`` does: the frozen backbone in eval mode under the
bf16 autocast over batches of randomly shifted frames, here all at one budget (155 tokens: the mean
of training's budget draw), so batch sizes compare per frame. The setting is process-wide and cannot
be undone, so each measurement is a fresh process; rounds alternate default and tuned processes, so
a host that slows down mid-run slows both, and medians over rounds are printed. The last line is
what the cache build changed by: kept memory at the largest batch against the default at the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(data: str, batch: int, budget: int, frames: int, tuned: bool) -> dict:
    """Time forward passes of ``batch`` frames at ``budget`` tokens, ``frames`` in all (after one
    warm-up pass), in this process."""
    if tuned:
        from arrcoc_steer.allocator import keep_freed_memory

        assert keep_freed_memory(), "glibc's malloc could not be configured here"
    import numpy as np
    import torch

    from arrcoc_steer.train import TrainConfig, Trainer

    torch.set_num_threads(os.cpu_count() or 1)
    trainer = Trainer(TrainConfig(data=(data,), out=tempfile.mkdtemp(), train_only="head", holdout_frac=0.0))
    trainer.model.eval()
    rng = np.random.default_rng(0)
    allocations = np.stack([trainer.grid.uniform(budget)] * batch)

    def forward():
        images, state, ids, mask, _ = trainer.model_inputs(trainer.data.batch(rng.choice(len(trainer.data), batch)), True, rng)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            trainer.model(images, state, ids, mask, allocations)

    forward()  # warm-up: kernels, first touch of the heap
    passes = max(1, frames // batch)
    faults0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(passes):
        forward()
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return {"fps": passes * batch / seconds, "faults_per_frame": faults / (passes * batch)}


def measure(data: str, batch: int, budget: int, frames: int, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["ARRCOC_STEER_DEFAULT_MALLOC"] = "0" if tuned else "1"
    cmd = [sys.executable, __file__, "--worker", data, "--batches", str(batch), "--budget", str(budget),
           "--frames", str(frames)]
    out = subprocess.run(cmd + (["--tuned"] if tuned else []), env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="frames per forward pass")
    p.add_argument("--budget", type=int, default=155, help="visual tokens per frame")
    p.add_argument("--frames", type=int, default=512, help="timed frames per process")
    p.add_argument("--rounds", type=int, default=2, help="default/tuned process pairs per batch size")
    p.add_argument("--worker", metavar="DATA", help=argparse.SUPPRESS)
    p.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batches[0], args.budget, args.frames, args.tuned)))
        return 0

    from arrcoc_steer.data import write_random_episodes

    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "demos")
        write_random_episodes(data, n=8, length=80)
        fps_at = {}
        for batch in args.batches:
            runs = {False: [], True: []}
            for _ in range(args.rounds):
                for tuned in (False, True):
                    runs[tuned].append(measure(data, batch, args.budget, args.frames, tuned))
            fps = fps_at[batch] = {k: statistics.median(r["fps"] for r in v) for k, v in runs.items()}
            faults = {k: statistics.median(r["faults_per_frame"] for r in v) for k, v in runs.items()}
            print(f"batch {batch:4d}  default malloc : {fps[False]:7.1f} frames/s  {faults[False]:8.0f} page faults/frame")
            print(f"batch {batch:4d}  kept memory    : {fps[True]:7.1f} frames/s  {faults[True]:8.0f} page faults/frame")
            print(f"batch {batch:4d}  kept / default : {fps[True] / fps[False]:7.2f}x frames/s")
    lo, hi = min(args.batches), max(args.batches)
    print(f"kept memory at batch {hi} / default at batch {lo}: {fps_at[hi][True] / fps_at[lo][False]:.2f}x frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
