"""Neuron atlas at OpenVLA scale: throughput against a plain matmul, and peak memory beyond weights.

    python benchmarks/bench_atlas.py                 # 1024 neurons of a full-width layer (CPU-sized)
    python benchmarks/bench_atlas.py --full          # one whole layer: 11008 x 4096 onto 32064 x 4096
    python benchmarks/bench_atlas.py --full --layers 32 --device cuda --dtype bfloat16

One synthetic layer with Llama-2-7B / OpenVLA shapes (random value vectors, random 32,064-token
basis). The atlas projector (chunked matmul into one reused buffer + exact grouped top-k, what
``NeuronAtlas.build`` runs per layer) is timed against a plain ``values @ basis.T`` of the same
shape, measured in the same process, alternating, median of ``--repeats``; a naive chunked
``torch.topk`` is shown for reference. Issue 4's targets: throughput >= 0.7 of the matmul, peak
memory beyond the weights <= 2 GB. Also times the weights hash that keys the cache.
``--profile`` prints where one atlas pass spends its time, kernel by kernel.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arrcoc_steer.atlas import AtlasSettings, _digest, _Projector  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def naive_topk(values, basis, k, chunk):
    for start in range(0, values.shape[0], chunk):
        (values[start:start + chunk] @ basis.T).topk(k, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="all 11008 neurons of the layer")
    parser.add_argument("--neurons", type=int, default=1024, help="neurons when not --full")
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32064)
    parser.add_argument("--layers", type=int, default=1, help="project the layer this many times")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: fp32 CPU, bf16 GPU)")
    parser.add_argument("--profile", action="store_true", help="print the kernels of one atlas pass")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    n = 11008 if args.full else args.neurons
    torch.manual_seed(0)
    rss0 = rss_now_bytes()
    values = torch.empty(n, args.d_model, device=device, dtype=dtype).normal_(0, 0.02)  # (F, d)
    basis = torch.empty(args.vocab, args.d_model, device=device, dtype=dtype).normal_(0, 0.02)  # (V, d)
    weights = values.numel() * values.element_size() + basis.numel() * basis.element_size()
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"{dtype}, layer {n} x {args.d_model} onto {args.vocab} x {args.d_model}, x{args.layers}, top-{args.top_k}")

    settings = AtlasSettings(top_k=args.top_k, basis="embed")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    projector = _Projector(basis, settings, device, dtype, args.chunk_size)

    def atlas():
        for _ in range(args.layers):
            projector(values)

    def matmul():
        for _ in range(args.layers):
            values @ basis.T

    atlas()  # warm-up, and the memory measurement
    extra = (torch.cuda.max_memory_allocated() - base_alloc) if device.type == "cuda" \
        else rss_peak_bytes() - rss0 - weights
    chunk = projector.chunk
    naive_chunk = chunk

    def naive():
        for _ in range(args.layers):
            naive_topk(values, basis, args.top_k, naive_chunk)

    matmul()
    times = {"atlas": [], "matmul": [], "naive topk": []}
    for _ in range(args.repeats):  # alternate, so load from other processes hits all alike
        times["matmul"].append(timed(matmul, device))
        times["atlas"].append(timed(atlas, device))
        times["naive topk"].append(timed(naive, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = 2 * n * args.d_model * args.vocab * args.layers
    for name, t in med.items():
        print(f"  {name:11s} {t * 1e3:9.1f} ms  {flops / t / 1e12:7.2f} TFLOP/s")
    print(f"throughput ratio atlas / plain matmul: {med['matmul'] / med['atlas']:.3f}  (target >= 0.7)")
    print(f"throughput ratio naive chunked topk / plain matmul: {med['matmul'] / med['naive topk']:.3f}")
    print(f"peak memory beyond the weights: {extra / 2**30:.3f} GiB  (target <= 2 GB; "
          f"weights {weights / 2**30:.3f} GiB, chunk {chunk} neurons)")

    if args.profile:
        activity = torch.profiler.ProfilerActivity
        kinds = [activity.CPU] + ([activity.CUDA] if device.type == "cuda" else [])
        with torch.profiler.profile(activities=kinds) as prof:
            atlas()
            sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))

    start = time.perf_counter()
    _digest(values)  # one tensor, one thread; NeuronAtlas hashes layers in parallel
    hash_s = time.perf_counter() - start
    print(f"weights hash of this layer's value vectors: {hash_s * 1e3:.0f} ms "
          f"({values.numel() * values.element_size() / hash_s / 2**30:.2f} GiB/s)")


if __name__ == "__main__":
    main()
