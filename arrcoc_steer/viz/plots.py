"""Plots of a sweep's results (matplotlib, Agg): one function per question a reader asks.

Each takes a :class:`Run` (the run folder, loaded once) and returns a figure, or None when the sweep
holds nothing to plot for that question (e.g. no budget conditions -> no success-vs-budget plot).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CONTROL_KINDS = ("random_control", "random_direction")


@dataclass
class Run:
    """A sweep's run folder: manifest, results and per-episode records (trajectories on demand)."""

    path: Path
    results: dict = field(repr=False)
    episodes: list[dict] = field(repr=False)

    @classmethod
    def load(cls, path: str | Path) -> Run:
        path = Path(path)
        results = json.loads((path / "results.json").read_text())
        episodes = [json.loads(p.read_text()) for p in sorted((path / "episodes").glob("*.json"))]
        return cls(path, results, episodes)

    @property
    def baseline(self) -> str | None:
        return self.results["manifest"].get("baseline")

    @cached_property
    def conditions(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.results["manifest"]["conditions"] if c["name"] in self.results["summary"]}

    def stat(self, condition: str, metric: str, task: str = "all") -> dict:
        return self.results["summary"][condition]["tasks"].get(task, {}).get(metric, {})

    def of_kind(self, *kinds: str) -> list[str]:
        return [n for n, c in self.conditions.items() if c["kind"] in kinds]

    def speeds(self, condition: str) -> list[np.ndarray]:
        """Per-step end-effector speed (m/s at 10 Hz) of every finished episode of ``condition``."""
        from safetensors.numpy import load_file

        out = []
        for ep in self.episodes:
            if ep["condition"] == condition and ep["status"] == "ok" and ep.get("arrays"):
                pos = load_file(str(self.path / "episodes" / ep["arrays"]))["ee_pos"]
                out.append(np.linalg.norm(np.diff(pos, axis=0), axis=1) * 10.0)
        return out


def _figure(width: float = 6.4, height: float = 3.6):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(alpha=0.3)
    return fig, ax


def speed_over_time(run: Run, max_lines: int = 8):
    """Mean end-effector speed at each control step, per condition (random controls as one band)."""
    names = [n for n in run.conditions if run.conditions[n]["kind"] not in CONTROL_KINDS][:max_lines]
    if not names:
        return None
    fig, ax = _figure()
    controls = run.of_kind(*CONTROL_KINDS)
    speeds = {n: run.speeds(n) for n in names + controls}  # each read from disk once
    speeds = {n: s for n, s in speeds.items() if s}
    horizon = min((min(len(x) for x in s) for s in speeds.values()), default=0)
    if horizon < 2:
        plt.close(fig)
        return None
    t = np.arange(horizon)
    controls = [np.mean([x[:horizon] for x in s], 0) for n, s in speeds.items() if n not in names]
    if controls:
        lo, hi = np.percentile(controls, [2.5, 97.5], axis=0)
        ax.fill_between(t, lo, hi, color="0.8", label=f"random controls (95% band, n={len(controls)})")
    for n in (n for n in names if n in speeds):
        runs = np.array([x[:horizon] for x in speeds[n]])
        mean, sem = runs.mean(0), runs.std(0) / np.sqrt(len(runs))
        ax.plot(t, mean, lw=2 if n == run.baseline else 1.4, label=n)
        ax.fill_between(t, mean - sem, mean + sem, alpha=0.2)
    ax.set(xlabel="control step (10 Hz)", ylabel="end-effector speed (m/s)",
           title="Speed over time (mean ± s.e.m. over episodes, matched window)")  # fmt: skip
    ax.legend(fontsize=7, loc="upper right")
    return fig


def _effect(run: Run, name: str, metric: str) -> float:
    value = (run.stat(name, metric).get("vs_baseline") or {}).get("pct_change")
    return np.nan if value is None else float(value)


def alpha_sweep(run: Run, metric: str = "speed_w"):
    """Effect on ``metric`` (% vs baseline) and success against alpha, per concept and unit."""
    groups: dict[str, list] = defaultdict(list)
    for n in run.of_kind("concept", "residual"):
        c = run.conditions[n]
        strength = c.get("alpha", c.get("strength"))
        label = f"{c.get('concept') or c.get('direction', n)} ({c.get('unit', 'strength')}, {c.get('mode', 'add')})"
        groups[label].append((strength, n))
    groups = {k: sorted(v) for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, pts in groups.items():
        x = [a for a, _ in pts]
        ax.plot(x, [_effect(run, n, metric) for _, n in pts], "o-", label=label)
        ax2.plot(x, [run.stat(n, "success").get("mean", np.nan) for _, n in pts], "o-", label=label)
    if run.baseline:
        ax2.axhline(run.stat(run.baseline, "success").get("mean", np.nan), color="k", ls="--", lw=1, label=run.baseline)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="alpha", ylabel=f"{metric}: % change vs baseline", title="Alpha sweep: behaviour")
    ax2.set(xlabel="alpha", ylabel="success rate", ylim=(-0.05, 1.05), title="Alpha sweep: success")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def success_vs_budget(run: Run):
    """Success rate against the visual-token budget, one line per allocator (95% bootstrap CI)."""
    groups: dict[str, list] = defaultdict(list)
    for n in run.of_kind("budget"):
        c = run.conditions[n]
        groups[c["allocator"]].append((c["budget"], n))
    if not groups:
        return None
    fig, ax = _figure()
    for allocator, pts in sorted(groups.items()):
        pts.sort()
        x = [b for b, _ in pts]
        stats = [run.stat(n, "success") for _, n in pts]
        mean = np.array([s.get("mean", np.nan) for s in stats])
        ci = np.array([s.get("ci", [np.nan, np.nan]) for s in stats])
        ax.errorbar(x, mean, yerr=[mean - ci[:, 0], ci[:, 1] - mean], fmt="o-", capsize=3, label=allocator)
    ax.set(xlabel="visual tokens per control step", ylabel="success rate", ylim=(-0.05, 1.05),
           title="Success vs visual budget", xscale="log")  # fmt: skip
    ax.set_xticks(sorted({b for pts in groups.values() for b, _ in pts}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.legend(fontsize=8)
    return fig


def layer_ablation(run: Run, metric: str = "speed_w"):
    """Effect of the same concept steered in different layer groups (bars, % vs baseline)."""
    rows = []
    for n in run.of_kind("concept"):
        c = run.conditions[n]
        if c.get("layers") is not None:
            rows.append((str(c.get("layers_label") or c["layers"]), n))
    if len(rows) < 2:
        return None
    fig, ax = _figure()
    labels = [f"{lab}\n{n}" for lab, n in rows]
    effects = [_effect(run, n, metric) for _, n in rows]
    ax.bar(range(len(rows)), effects, color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel=f"{metric}: % change vs baseline", title="Layer-depth ablation")
    return fig


def control_distribution(run: Run, metric: str = "speed_w"):
    """Each concept's (or direction's) effect against the distribution of its matched random controls."""
    controls = run.results.get("controls") or {}
    if not controls:
        return None
    fig, ax = _figure()
    for i, (concept, entry) in enumerate(controls.items()):
        effects = [_effect(run, n, metric) for n in entry["controls"]]
        ax.scatter(np.full(len(effects), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(effects)),
                   effects, s=12, color="0.5", label="random controls" if i == 0 else None)  # fmt: skip
        ax.scatter([i], [_effect(run, concept, metric)], s=80, marker="*", color="tab:red",
                   label="concept" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(controls)), list(controls), fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel=f"{metric}: % change vs baseline", title="Steer vs matched random controls")
    ax.legend(fontsize=8)
    return fig


PLOTS = {
    "Speed over time": speed_over_time,
    "Alpha sweep": alpha_sweep,
    "Success vs budget": success_vs_budget,
    "Layer-depth ablation": layer_ablation,
    "Steer vs random controls": control_distribution,
}
