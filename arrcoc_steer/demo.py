"""The whole loop on the shipped policy, in a few minutes on a laptop CPU.

1. load MiniVLA and build (or load from cache) its neuron atlas;
2. find the "fast", "slow" and "up" concepts from keywords, and "fast" / "slow" again by what their
   neurons do to each state's action through the policy's head; calibrate each neuron's scale;
   fit a residual map from the plain instruction to "... quickly" where the word reaches the actions;
3. run the unsteered policy, the prompt modifier, concept steering (both kinds), a matched
   random-neuron control, the map, and two visual-token budgets (uniform vs ARR-COC relevance) on
   the same seeds;
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
    action_alpha: float = option(1.0, "the same for the concepts found through the action head")
    top_n: int = option(10, "neurons per concept")
    budget: int = option(64, "the small visual budget compared with the policy's full 400 tokens")
    workers: int | None = option(None, "processes (default: all cores)")


def prepare_steering(cfg: DemoConfig, policy, out: Path) -> tuple[Path, Path, list]:
    """Atlas -> concepts.yaml (from keywords), concepts_action.yaml (through the action readout) and
    calibration.safetensors in ``out``; returns the calibration and the concepts."""
    from .atlas import NeuronAtlas
    from .policy_steering import observations, write_action_concepts, write_calibration, write_concepts

    atlas = NeuronAtlas.build(policy, cache=out / "cache", progress=False)
    calib_path = out / "calibration.safetensors"
    concepts = write_concepts(policy, out / "concepts.yaml", atlas=atlas, top_n=cfg.top_n)
    items = observations(cfg.tasks, per_task=12)
    action = write_action_concepts(policy, out / "concepts_action.yaml", ("fast", "slow"), items=items,
                                   readout=out / "readout.safetensors", budget=cfg.budget)  # fmt: skip
    if not calib_path.exists():
        write_calibration(policy, calib_path, items, budget=cfg.budget)
    return calib_path, [(c, atlas) for c in concepts], action


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


def demo_conditions(cfg: DemoConfig, out: Path, calib_path: Path, map_path: Path) -> list[dict]:
    steer = {"kind": "concept", "concepts": str(out / "concepts.yaml"), "alpha": cfg.alpha, "unit": "calibrated",
             "calibration": str(calib_path), "mode": "clamp"}  # fmt: skip
    action = {**steer, "concepts": str(out / "concepts_action.yaml"), "alpha": cfg.action_alpha, "positions": "action"}
    return [
        {"kind": "unsteered"},
        {"kind": "prompt", "modifier": "quickly"},
        {**steer, "concept": "fast"},
        {**steer, "concept": "slow"},
        {**steer, "concept": "up"},
        {**steer, "concept": "fast", "kind": "random_control", "seed": 0},
        {**action, "concept": "fast", "name": f"action_fast_clamp{cfg.action_alpha:g}cal"},
        {**action, "concept": "slow", "name": f"action_slow_clamp{cfg.action_alpha:g}cal"},
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
    calib_path, found, action = prepare_steering(cfg, policy, out)
    for concept, atlas in found:
        print(f"[{time.perf_counter() - t0:5.1f}s] concept {concept.name!r}: " + atlas.describe(*concept.neurons[0], k=5))
    for concept in action:
        print(f"[{time.perf_counter() - t0:5.1f}s] concept {concept.name!r} through the action head: {concept.meaning}")
    map_path = prepare_map(cfg, policy, out)
    print(f"[{time.perf_counter() - t0:5.1f}s] residual map for 'quickly': {map_path}")
    previous = RunFolder(out / "eval").read_manifest()
    if previous is not None and previous.get("policy") != describe_policy(str(policy_path)):
        print(f"[{time.perf_counter() - t0:5.1f}s] the policy changed since the last demo: {out / 'eval'} starts afresh")
        shutil.rmtree(out / "eval")
    results = evaluate(str(policy_path), list(cfg.tasks), demo_conditions(cfg, out, calib_path, map_path),
                       seeds=cfg.seeds, out_dir=out / "eval", workers=cfg.workers, frames="agentview")  # fmt: skip
    print(results.format(["success", "speed_w", "peak_ee_z"]))
    extras = ReportExtras(
        title="arrcoc_steer demo: steering and visual budgets on MiniVLA",
        summary=f"Concept clamps at {cfg.alpha:g}x each neuron's calibrated scale (found from keywords; "
        f"{cfg.action_alpha:g}x for those found through the action head), a matched random-neuron control, "
        f"the prompt modifier, a residual map that stands in for it, and a {cfg.budget}-token "
        f"budget (uniform vs ARR-COC), "
        f"{cfg.seeds} seeds x {len(cfg.tasks)} tasks, against the unsteered policy on the same seeds.",
        concepts=[ConceptNeurons(c.name, c.keywords, [(l, n, atlas.tokens(l, n, k=6)) for l, n in c.neurons[:6]])
                  for c, atlas in found],  # fmt: skip
        figures=[("ARR-COC relevance: one scene, two instructions", relevance_figure(policy, out, budget=cfg.budget))],
    )
    report = write_report(out / "eval", out / "report.html", extras)
    print(f"[{time.perf_counter() - t0:5.1f}s] report: {report}")
    return report
