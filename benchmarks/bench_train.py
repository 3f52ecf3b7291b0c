"""Full training steps (stage 1 of the recipe: LoRA backbone, vision and head) with the backbone's
attention in bf16 against float32 under the bf16 autocast: seconds per step, as a ratio.

    python benchmarks/bench_train.py [--steps 8] [--batch 64] [--low-budget-frac 0.65] [--data data/demos]

Two trainers with the same seed draw the same batches, budgets and allocations; their steps are
interleaved, so a host that slows down mid-run slows both. The baseline is transformers' own "sdpa"
attention, which runs in bf16 under the autocast; MiniVLA's default (``sdpa_float32``) casts the
attention to float32 and back. Printed: the mean step of each (budgets differ between steps, and a
run costs their sum), the ratio and frames per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from arrcoc_steer.data import write_random_episodes
    from arrcoc_steer.models.minivla import ATTENTION
    from arrcoc_steer.train import TrainConfig, Trainer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed steps per trainer (after one warm-up step)")
    p.add_argument("--batch", type=int, default=64, help="frames per step (the recipe's stages 1-2: 64)")
    p.add_argument("--low-budget-frac", type=float, default=0.65, help="share of steps at 64..128 visual tokens")
    p.add_argument("--data", help="a dataset folder (`arrcoc-steer collect`); default: random episodes")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or str(tmp / "demos")
        if not args.data:
            write_random_episodes(data, n=8, length=80)
        trainers = {}
        for attention in ("sdpa", ATTENTION):
            cfg = TrainConfig(data=(data,), out=str(tmp / attention), batch_size=args.batch,
                              low_budget_frac=args.low_budget_frac, log_every=10**6)  # fmt: skip
            trainers[attention] = Trainer(cfg)
            trainers[attention].model.backbone.set_attn_implementation(attention)
        times = {name: [] for name in trainers}
        for step in range(args.steps + 1):
            for name, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.train_step()
                if step:  # the first step is warm-up
                    times[name].append(time.perf_counter() - t0)

    base, ours = (statistics.fmean(times[name]) for name in ("sdpa", ATTENTION))  # a run costs the sum
    print(f"attention in bf16 (sdpa)             : {base:6.2f} s/step  {args.batch / base:5.1f} frames/s")
    print(f"attention in float32 ({ATTENTION})  : {ours:6.2f} s/step  {args.batch / ours:5.1f} frames/s")
    print(f"bf16 / float32 attention step time   : {base / ours:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
