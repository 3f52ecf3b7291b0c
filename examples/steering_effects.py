"""Measured effects of steering the default policy: concepts vs random controls vs prompting vs
residual directions, an alpha sweep and a layer-depth ablation, in one resumable sweep.

    python examples/steering_effects.py --out runs/steering --seeds 13

Steps: the policy's atlas -> "fast" / "slow" / "up" concepts (keywords + embedding neighbours) ->
per-neuron calibration on expert observations -> a contrastive "quickly" - "slowly" residual direction
-> one sweep on fresh seeds (every condition sees the same tasks and seeds) -> results.json / .csv and
an HTML report. Interrupt it at any time; rerunning resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arrcoc_steer.eval import evaluate
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, load_policy
from arrcoc_steer.policy_steering import observations, write_calibration, write_concepts, write_direction
from arrcoc_steer.viz.report import ConceptNeurons, ReportExtras, write_report

TASKS = ["LiftRedBlock", "PickRedBlockIntoTray", "PickLeftBlockIntoTray", "PutRedBlockOnPlate"]
LAYER_GROUPS = {"early": [0, 1], "middle": [2, 3], "late": [4, 5]}


def conditions(concepts: Path, calibration: Path, direction: Path, alpha: float, alphas: list[float],
               n_controls: int, strengths: list[float]) -> list[dict]:  # fmt: skip
    """The sweep, most important first (a sweep runs condition by condition, so a run cut short still
    holds the main comparison): concepts vs prompts vs residual directions, their random controls,
    then the alpha sweep and the layer-depth ablation."""
    steer = {"kind": "concept", "concepts": str(concepts), "unit": "calibrated", "calibration": str(calibration),
             "mode": "clamp"}  # fmt: skip
    main_strength, *other_strengths = sorted(strengths, reverse=True)
    out = [{"kind": "unsteered"}, {"kind": "prompt", "modifier": "quickly"}, {"kind": "prompt", "modifier": "slowly"}]
    out += [{**steer, "concept": name, "alpha": alpha} for name in ("fast", "slow", "up")]
    out += [{"kind": "residual", "direction": str(direction), "strength": s, "positions": "text"}
            for s in (main_strength, -main_strength)]  # fmt: skip
    out += [{**steer, "concept": "fast", "alpha": alpha, "kind": "random_control", "seed": s} for s in range(n_controls)]
    out += [{**steer, "concept": "slow", "alpha": alpha, "kind": "random_control", "seed": s} for s in range(n_controls)]
    out += [{**steer, "concept": "fast", "alpha": a} for a in alphas if a != alpha]  # alpha sweep
    out += [{**steer, "concept": "fast", "alpha": alpha, "layers": layers} for layers in LAYER_GROUPS.values()]
    out += [{"kind": "residual", "direction": str(direction), "strength": sign * s, "positions": "text"}
            for s in other_strengths for sign in (1, -1)]  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--out", default="runs/steering")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--seeds", type=int, default=13, help="fresh seeds per task (13 x 4 tasks = 52 episodes per condition)")
    p.add_argument("--alpha", type=float, default=4.0, help="calibrated clamp strength of the main comparison")
    p.add_argument("--alphas", type=float, nargs="+", default=[2, 4, 6, 8, 10, 20], help="alpha sweep")
    p.add_argument("--controls", type=int, default=20, help="random-neuron controls per concept")
    p.add_argument("--strengths", type=float, nargs="+", default=[4.0, 8.0], help="residual direction strengths (unit vectors; residual norm units)")
    p.add_argument("--workers", type=int)
    p.add_argument("--max-steps", type=int, help="cap on episode length (smoke runs)")
    p.add_argument("--backend", default="local")
    p.add_argument("--no-video", action="store_true", help="write no mp4 (else one per task and condition, seed 1)")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = load_policy(args.policy)
    concepts_path, calib_path, dir_path = out / "concepts.yaml", out / "calibration.safetensors", out / "direction.safetensors"
    found = write_concepts(policy, concepts_path, cache=out / "cache")
    if not calib_path.exists() or not dir_path.exists():
        items = observations(args.tasks, per_task=12)
        write_calibration(policy, calib_path, items)
        write_direction(policy, dir_path, "quickly", "slowly", items=items)
    conds = conditions(concepts_path, calib_path, dir_path, args.alpha, args.alphas, args.controls, args.strengths)
    frames = None if args.no_video else "agentview"
    results = evaluate(args.policy, args.tasks, conds, args.seeds, out / "eval", workers=args.workers,
                       backend=args.backend, frames=frames, video_seeds=1, max_steps=args.max_steps)  # fmt: skip
    print(results.format(["success", "speed_w", "peak_ee_z"]))
    from arrcoc_steer.atlas import NeuronAtlas

    atlas = NeuronAtlas.build(policy, cache=out / "cache", progress=False)
    extras = ReportExtras(
        title="Steering MiniVLA: concepts, controls, prompts and residual directions",
        concepts=[ConceptNeurons(c.name, c.keywords, [(l, n, atlas.tokens(l, n, k=6)) for l, n in c.neurons])
                  for c in found],  # fmt: skip
    )
    print(write_report(out / "eval", out / "report.html", extras))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
