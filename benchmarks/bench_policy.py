"""Control-step latency of MiniVLA at batch 1: 64 vs 400 visual tokens, and what ARR-COC adds.

    python benchmarks/bench_policy.py [--policy DIR] [--compare DIR] [--rounds 30] [--threads N]

A control step is what the closed loop pays per env step: ``predict_action`` on one observation
(both cameras + state + instruction). Rounds interleave the conditions so machine load hits all of
them alike; medians are printed with their ratios, each against a baseline measured in this run:

* step at 64 tokens and at 400 tokens (uniform allocation), and 400 / 64;
* ARR-COC relevance computation alone, and a full relevance-allocated step at 64 tokens, as a
  share of the uniform 64-token step (issue 5: relevance <= 10% of the step);
* bf16 autocast against float32 at 400 tokens (CPUs with AVX512-BF16 run it faster);
* with ``--compare DIR``, another checkpoint's 64- and 400-token steps in the same rounds, and the
  policy's time over its (a release against the one before it: two separate runs on a shared host
  can differ by 30%, the same rounds do not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def observation(seed: int = 0) -> dict:
    import envs

    env = envs.make("PickRedBlockIntoTray")
    try:
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    return obs


def main(argv: list[str] | None = None) -> int:
    from arrcoc_steer.models.minivla import load_policy
    from arrcoc_steer.relevance import RelevanceAllocator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", help="MiniVLA checkpoint (default: the shipped policy)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--compare", help="another MiniVLA checkpoint timed in the same rounds (e.g. the previous release)")
    p.add_argument("--json", help="also write the medians and ratios to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.policy)
    obs, text = observation(), "put the red block in the tray"
    allocator = RelevanceAllocator()

    def bf16_step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            policy.predict_action(obs, text, budget=400)

    cases = {
        "step, 64 tokens": lambda: policy.predict_action(obs, text, budget=64),
        "step, 400 tokens": lambda: policy.predict_action(obs, text, budget=400),
        "relevance only (64)": lambda: allocator(obs, text, budget=64),
        "step, 64 tokens, ARR-COC": lambda: policy.predict_action(obs, text, allocation=allocator(obs, text, budget=64).allocation),
        "step, 400 tokens, bf16": bf16_step,
    }  # fmt: skip
    if args.compare:
        other = load_policy(args.compare)
        cases["compared, step, 64 tokens"] = lambda: other.predict_action(obs, text, budget=64)
        cases["compared, step, 400 tokens"] = lambda: other.predict_action(obs, text, budget=400)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # warm-up (caches, allocator, lazy imports)
        fn()
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"MiniVLA control step, batch 1, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
    for name, ms in med.items():
        print(f"  {name:<28} {ms:8.1f} ms")
    print(f"  400 / 64 tokens                {med['step, 400 tokens'] / med['step, 64 tokens']:6.2f}x")
    print(f"  relevance / 64-token step      {med['relevance only (64)'] / med['step, 64 tokens']:6.1%}")
    print(f"  ARR-COC step / uniform step    {med['step, 64 tokens, ARR-COC'] / med['step, 64 tokens']:6.2f}x")
    print(f"  bf16 / float32 at 400 tokens   {med['step, 400 tokens, bf16'] / med['step, 400 tokens']:6.2f}x")
    compared = {n: med[f"step, {n} tokens"] / med[f"compared, step, {n} tokens"] for n in (64, 400) if args.compare}
    for n, ratio in compared.items():
        print(f"  {n:>3} tokens, policy / compared  {ratio:6.2f}x   ({args.compare})")
    if args.json:
        import json

        record = {f"median {k} (ms)": round(v, 2) for k, v in med.items()}
        record["400 / 64 tokens"] = round(med["step, 400 tokens"] / med["step, 64 tokens"], 3)
        record["relevance / 64-token step"] = round(med["relevance only (64)"] / med["step, 64 tokens"], 4)
        record.update({f"{n} tokens, policy / compared": round(r, 3) for n, r in compared.items()})
        record["torch threads"] = torch.get_num_threads()
        Path(args.json).write_text(json.dumps(record, indent=2))
    spread = {k: np.percentile(v, 90) / np.percentile(v, 10) for k, v in times.items()}
    print(f"  (p90/p10 spread: {max(spread.values()):.2f}x at most; a loaded machine inflates it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
