"""Closed-loop evaluation: rollouts, per-episode metrics, statistics, resumable sweeps, backends.

One call runs a sweep of tasks x seeds x conditions and writes a run folder (episode JSON +
safetensors trajectories, ``results.json``, ``results.csv``)::

    from arrcoc_steer.eval import evaluate, Unsteered, Prompt, Concept, random_controls
    fast = Concept(concepts="concepts.yaml", concept="fast", alpha=4.0)
    results = evaluate("arrcoc_steer/checkpoints/minivla", tasks="goal", seeds=20, out_dir="runs/fast",
                       conditions=[Unsteered(), Prompt(modifier="quickly"), fast, *random_controls(fast)])
    print(results.format())

Modules, in the order data flows: :mod:`.policies` (the policy contract), :mod:`.conditions` (what is
done to the policy), :mod:`.rollout` (one episode), :mod:`.metrics` (per episode), :mod:`.stats`
(per condition), :mod:`.backends` (where episodes run), :mod:`.sweep` (the run folder and
:func:`evaluate`). Closed-loop strength control is :mod:`arrcoc_steer.control`.
"""

from .backends import BACKENDS, Job, LocalBackend, RayBackend, Runner, SerialBackend, make_backend
from .conditions import (
    KINDS,
    Budget,
    ClosedLoop,
    Concept,
    Condition,
    Prompt,
    RandomControl,
    RandomDirection,
    Residual,
    Unsteered,
    alpha_grid,
    as_condition,
    condition_from_dict,
    load_conditions,
    make_condition,
    random_controls,
    save_conditions,
)
from .metrics import METRICS, episode_metrics, matched_windows, windowed_metrics
from .policies import ExpertPolicy, FunctionPolicy, Policy, as_policy, load_policy
from .rollout import EpisodeRecord, run_episode
from .stats import bootstrap_ci, compare_to_fixed, control_percentile, paired_test, summarize
from .sweep import SEED_BASE, RunFolder, SweepResults, aggregate, evaluate, fresh_seeds, load_results, resolve_tasks

__all__ = [
    "evaluate", "aggregate", "load_results", "SweepResults", "RunFolder", "fresh_seeds", "resolve_tasks", "SEED_BASE",
    "Condition", "Unsteered", "Prompt", "Concept", "RandomControl", "Residual", "RandomDirection", "ClosedLoop",
    "Budget", "KINDS",
    "make_condition", "as_condition", "condition_from_dict", "load_conditions", "save_conditions",
    "alpha_grid", "random_controls",
    "Policy", "ExpertPolicy", "FunctionPolicy", "as_policy", "load_policy",
    "EpisodeRecord", "run_episode", "METRICS", "episode_metrics", "windowed_metrics", "matched_windows",
    "bootstrap_ci", "paired_test", "control_percentile", "summarize", "compare_to_fixed",
    "BACKENDS", "Job", "Runner", "SerialBackend", "LocalBackend", "RayBackend", "make_backend",
]  # fmt: skip
