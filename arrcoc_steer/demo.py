"""The whole loop on the shipped policy, in a few minutes on a laptop CPU.

1. load MiniVLA and build (or load from cache) its neuron atlas;
2. find the "fast", "slow" and "up" concepts from keywords and calibrate each neuron's scale;
   fit a residual map from the plain instruction to "... quickly" where the word reaches the actions;
3. run the unsteered policy, the prompt modifier, concept steering, a matched random-neuron
   control, the map, and two visual-token budgets (uniform vs ARR-COC relevance) on the same seeds;
4. print the effects table and write the HTML report (plots, videos, concept neurons, relevance).

    arrcoc-steer demo --out runs/demo
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import option

@dataclass
class DemoConfig:
    """What the demo runs; every field is an ``arrcoc-steer demo`` flag."""

    out: str = option("runs/demo", "run folder: atlas cache, concepts, calibration, episodes, report")
    policy: str | None = option(None, "MiniVLA checkpoint folder (default: the shipped policy)")
    tasks: tuple[str, ...] = option(("LiftRedBlock", "PickRedBlockIntoTray"), "tasks to run")
    seeds: int = option(4, "fresh seeds per task and condition")
    alpha: float = option(4.0, "concept clamp strength, in multiples of each neuron's 99th-percentile activation")
    top_n: int = option(10, "neurons per concept")
    budget: int = option(64, "the small visual budget compared with the policy's full 400 tokens")
    workers: int | None = option(None, "processes (default: all cores)")


def prepare_steering(cfg: DemoConfig, policy, out: Path) -> tuple[Path, Path, list]:
    """Atlas -> concepts.yaml and calibration.safetensors in ``out``; returns them and the concepts."""
    from .atlas import NeuronAtlas
    from .policy_steering import observations, write_calibration, write_concepts

    atlas = NeuronAtlas.build(policy, cache=out / "cache", progress=False)
    concepts_path, calib_path = out / "concepts.yaml", out / "calibration.safetensors"
    concepts = write_concepts(policy, concepts_path, atlas=atlas, top_n=cfg.top_n)
    if not calib_path.exists():
        write_calibration(policy, calib_path, observations(cfg.tasks, per_task=12), budget=cfg.budget)
    return concepts_path, calib_path, [(c, atlas) for c in concepts]


def prepare_map(cfg: DemoConfig, policy, out: Path) -> Path:
    """map_quickly.safetensors in ``out``: "quickly" as a residual map at the action queries, in the
    layer where "quickly" - "slowly" is largest there (:func:`~arrcoc_steer.policy_steering.write_map`)."""
    from .policy_steering import observations, write_direction, write_map
    from .steering import ResidualDirection

    path = out / "map_quickly.safetensors"
    if not path.exists():
        items = observations(cfg.tasks, per_task=60, every=2, seed=100)
        reach = write_direction(policy, out / "direction.safetensors", "quickly", "slowly", items=items[::5],
                                positions="action", normalize=False, top_layers=1)  # fmt: skip
        write_map(policy, path, "quickly", layers=ResidualDirection.load(reach).layers, items=items, name="map_quickly")
    return path


def demo_conditions(cfg: DemoConfig, concepts_path: Path, calib_path: Path, map_path: Path) -> list[dict]:
    steer = {"kind": "concept", "concepts": str(concepts_path), "alpha": cfg.alpha, "unit": "calibrated",
             "calibration": str(calib_path), "mode": "clamp"}  # fmt: skip
    return [
        {"kind": "unsteered"},
        {"kind": "prompt", "modifier": "quickly"},
        {**steer, "concept": "fast"},
        {**steer, "concept": "slow"},
        {**steer, "concept": "up"},
        {**steer, "concept": "fast", "kind": "random_control", "seed": 0},
        {"kind": "residual", "direction": str(map_path), "positions": "action", "strength": 1.0},
        {"kind": "budget", "budget": cfg.budget, "allocator": "uniform"},
        {"kind": "budget", "budget": cfg.budget, "allocator": "relevance"},
    ]


def relevance_figure(policy, out: Path, task: str = "PickRedBlockIntoTray", budget: int = 64) -> Path:
    """ARR-COC maps for one scene under two instructions naming different objects."""
    import envs

    from .relevance import RelevanceAllocator
    from .viz.relevance import plot_instructions

    env = envs.make(task)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    allocator = RelevanceAllocator()
    texts = ["put the red block in the tray", "put the blue block in the tray"]
    results = [allocator(obs, text, budget=budget) for text in texts]
    path = out / "relevance.png"
    plot_instructions(results, np.stack([obs["agentview"], obs["wrist"]]), path)
    return path


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo; returns the path of the HTML report."""
    from .eval import evaluate
    from .eval.policies import describe_policy
    from .eval.sweep import RunFolder
    from .models.minivla import DEFAULT_CHECKPOINT, load_policy
    from .viz.report import ConceptNeurons, ReportExtras, write_report

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    policy_path = Path(cfg.policy) if cfg.policy else DEFAULT_CHECKPOINT
    policy = load_policy(policy_path)
    print(f"[{time.perf_counter() - t0:5.1f}s] policy {policy_path}")
    concepts_path, calib_path, found = prepare_steering(cfg, policy, out)
    for concept, atlas in found:
        print(f"[{time.perf_counter() - t0:5.1f}s] concept {concept.name!r}: " + atlas.describe(*concept.neurons[0], k=5))
    map_path = prepare_map(cfg, policy, out)
    print(f"[{time.perf_counter() - t0:5.1f}s] residual map for 'quickly': {map_path}")
    previous = RunFolder(out / "eval").read_manifest()
    if previous is not None and previous.get("policy") != describe_policy(str(policy_path)):
        print(f"[{time.perf_counter() - t0:5.1f}s] the policy changed since the last demo: {out / 'eval'} starts afresh")
        shutil.rmtree(out / "eval")
    results = evaluate(str(policy_path), list(cfg.tasks), demo_conditions(cfg, concepts_path, calib_path, map_path),
                       seeds=cfg.seeds, out_dir=out / "eval", workers=cfg.workers, frames="agentview")  # fmt: skip
    print(results.format(["success", "speed_w", "peak_ee_z"]))
    extras = ReportExtras(
        title="arrcoc_steer demo: steering and visual budgets on MiniVLA",
        summary=f"Concept clamps at {cfg.alpha:g}x each neuron's calibrated scale, a matched random-neuron "
        f"control, the prompt modifier, a residual map that stands in for it, and a {cfg.budget}-token "
        f"budget (uniform vs ARR-COC), "
        f"{cfg.seeds} seeds x {len(cfg.tasks)} tasks, against the unsteered policy on the same seeds.",
        concepts=[ConceptNeurons(c.name, c.keywords, [(l, n, atlas.tokens(l, n, k=6)) for l, n in c.neurons[:6]])
                  for c, atlas in found],  # fmt: skip
        figures=[("ARR-COC relevance: one scene, two instructions", relevance_figure(policy, out, budget=cfg.budget))],
    )
    report = write_report(out / "eval", out / "report.html", extras)
    print(f"[{time.perf_counter() - t0:5.1f}s] report: {report}")
    return report
