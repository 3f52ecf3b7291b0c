"""Head-only training with and without ``--head-cache``: frames per second, as a ratio.

    python benchmarks/bench_head_cache.py [--batch 64] [--cache-batch 256] [--steps 5]

Both trainers fine-tune only MiniVLA's action head on the same synthetic episodes (timing does not
depend on image content). The baseline runs the frozen backbone forward on every step (``--train-only
head``); the cached trainer reads the backbone's outputs from its cache (``--head-cache``). Printed:
frames per second of each (median step time after one warm-up step), the ratio, and the one-off cost
of building the cache per frame, so the break-even number of epochs is visible.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_step_seconds(trainer, steps: int) -> float:
    trainer.train_step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from arrcoc_steer.train import TrainConfig, Trainer
    from arrcoc_steer.data import write_random_episodes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="frames per step through the backbone (baseline)")
    p.add_argument("--cache-batch", type=int, default=256, help="frames per step on the cache")
    p.add_argument("--cache-frames", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_random_episodes(tmp / "demos", n=8, length=80)
        common = dict(data=(str(tmp / "demos"),), train_only="head", holdout_frac=0.1, log_every=10**6)
        direct = Trainer(TrainConfig(out=str(tmp / "direct"), batch_size=args.batch, **common))
        t0 = time.perf_counter()
        cached = Trainer(TrainConfig(out=str(tmp / "cached"), batch_size=args.cache_batch,
                                     head_cache=args.cache_frames, **common))  # fmt: skip
        build_per_frame = (time.perf_counter() - t0) / (len(cached.cache) + len(cached.val_cache or []))
        direct_fps = args.batch / median_step_seconds(direct, args.steps)
        cached_fps = args.cache_batch / median_step_seconds(cached, args.steps)

    print(f"head-only through the backbone : {direct_fps:9.1f} frames/s (batch {args.batch})")
    print(f"head-only on the cache         : {cached_fps:9.1f} frames/s (batch {args.cache_batch})")
    print(f"cached / direct                : {cached_fps / direct_fps:9.1f}x")
    print(f"building the cache             : {build_per_frame * 1000:9.1f} ms per frame, once "
          f"({build_per_frame * direct_fps:.2f}x one direct training visit)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
