"""Atlas -> concept -> calibrated steer -> matched random control, on a small model in seconds.

    python examples/steer_tiny_model.py            # pretrained MiniLM inside the policy layout
    python examples/steer_tiny_model.py --tiny     # a tiny random BERT (no pretrained weights)

1. Build the neuron atlas (every FFN value vector read in the token embedding) and cache it.
2. Find the "slow" concept: keyword + embedding neighbours, minus words closer to "fast".
3. Calibrate each neuron's activation scale (99th percentile of |activation|) on a few calls.
4. Clamp the concept's neurons to 4x their own scale at the action positions, for every call in
   the block, and compare the change in the action logits with a random control of the same size,
   layers and alpha: an effect counts only against such controls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arrcoc_steer.atlas import NeuronAtlas  # noqa: E402
from arrcoc_steer.concepts import find_concept  # noqa: E402
from arrcoc_steer.models.tiny import BertPolicyStandIn, load_minilm  # noqa: E402
from arrcoc_steer.steering import Intervention, Steerer, calibrate, random_control  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random backbone instead of MiniLM")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "arrcoc_atlas"))
    args = parser.parse_args()

    backbone, tokenizer = (None, None) if args.tiny else load_minilm()
    policy = BertPolicyStandIn(backbone).eval()  # text | proprio | visual | 7 action queries
    atlas = NeuronAtlas.build(policy, tokenizer=tokenizer, cache=args.cache, progress=False)
    print(atlas)

    keyword, against = ("slow", "fast") if tokenizer is not None else (atlas.vocab[300], None)
    concept = find_concept(atlas, keyword, policy, against=against or (), top_n=8)
    print(concept.describe(atlas, k=5))

    calls = [policy.example_inputs(generator=torch.Generator().manual_seed(s)) for s in range(8)]
    calibration = calibrate(policy, calls)
    steer = Intervention.from_concept(concept, alpha=4.0, unit="calibrated", positions="action")
    control = random_control(steer, rng=0)

    with torch.no_grad():
        base = torch.stack([policy(**x) for x in calls])  # (calls, b, 7, 256) action logits
        for name, intervention in (("concept", steer), ("random control", control)):
            with Steerer(policy, intervention, calibration=calibration) as steerer:
                steered = torch.stack([policy(**x) for x in calls])
            change = (steered - base).abs().mean().item()
            print(f"{name:15s} mean |change in action logits| {change:.4f}  "
                  f"(positions changed: {steerer.counts[intervention.name]})")


if __name__ == "__main__":
    main()
