"""Sweeps: tasks x seeds x conditions, written per episode, resumable, then aggregated.

:func:`evaluate` is the one entry point. A sweep lives in a run folder::

    out_dir/
      sweep.json                    what was asked: tasks, seeds, conditions, policy, baseline
      episodes/<task>__<condition>__<seed>.json          one per episode: status, metrics, notes
      episodes/<task>__<condition>__<seed>.safetensors   its trajectories (ee_pos, actions, ...)
      episodes/<task>__<condition>__<seed>.mp4           its video, when frames were asked for
      results.json                  per condition and task: statistics vs the baseline, windows
      results.csv                   one row per episode, every scalar metric

Every file is written atomically (a temporary file, then ``os.replace``), the episode JSON last, so
an episode either exists completely or not at all. Running :func:`evaluate` again on the same folder
resumes: finished episodes (``ok`` or ``policy_error``) are kept, crashed and missing ones run. New
tasks, seeds or conditions may be added to an existing folder; a condition whose spec changed under
the same name is refused. A crashed episode is written with its error and retried up to ``retries``
times in each run, never silently lost: ``results.json`` lists the ones that stayed crashed.

Order: conditions that need a reference behaviour (closed-loop control with ``reference=None``) run
after every other episode, with the reference measured per task on the baseline condition.

Seeds: ``seeds=n`` uses ``n`` fresh seeds ``SEED_BASE + i`` (SEED_BASE = 1,000,000, far from the
32-bit hashed seeds of the demonstration data of :mod:`envs.dataset`); every seed is recorded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, UnknownNameError
from .backends import Job, check_backend, make_backend
from .conditions import Condition, Resources, as_condition
from .metrics import (EPISODE_METRICS, METRICS, OUTCOMES, WINDOWED_METRICS, episode_metrics, episode_outcome,
                      matched_windows, windowed_metrics)  # fmt: skip
from .policies import as_policy, check_policy_source, describe_policy
from .rollout import ARRAY_FIELDS, EpisodeRecord, episode_key
from .stats import compare_to_fixed, control_summary, summarize

SEED_BASE = 1_000_000
EPISODE_FORMAT = "arrcoc-episode/1"
SWEEP_FORMAT = "arrcoc-sweep/1"
DONE = ("ok", "policy_error")
CSV_FIELDS = ("task", "condition", "seed", "status", "attempts", "instruction", "outcome", *METRICS, "window", "window_steps",
              "in_band", "reference", "error")  # fmt: skip


def fresh_seeds(n: int, base: int = SEED_BASE) -> list[int]:
    """``n`` evaluation seeds ``base, base + 1, ...``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"seeds must be a positive number of episodes or a list of ints, got {n!r}")
    return list(range(base, base + n))


def resolve_tasks(tasks: str | Iterable[str]) -> list[str]:
    """Task names from task names, suite names, or ``"all"`` (order kept, duplicates dropped)."""
    import envs

    names = [tasks] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for name in names:
        if name == "all":
            out += envs.list_tasks()
        elif name in envs.SUITES:
            out += envs.list_tasks(name)
        elif name in envs.TASKS:
            out.append(name)
        else:
            raise UnknownNameError("task or suite", name, [*envs.TASKS, *envs.SUITES, "all"])
    if not out:
        raise ConfigError("a sweep needs at least one task")
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------- run folder
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _clean(x):
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _dumps(obj) -> bytes:
    return json.dumps(_clean(obj), indent=1, default=_json_default, allow_nan=False).encode()


class RunFolder:
    """The files of one sweep (module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.episodes = self.root / "episodes"

    @property
    def manifest_path(self) -> Path:
        return self.root / "sweep.json"

    def path(self, key: str, suffix: str) -> Path:
        return self.episodes / f"{key}{suffix}"

    def read_manifest(self) -> dict | None:
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else None

    def merge_manifest(self, manifest: dict) -> dict:
        """Write ``manifest`` merged with the folder's own; refuse a changed policy or conditions."""
        self.episodes.mkdir(parents=True, exist_ok=True)
        old = self.read_manifest()
        if old is not None:
            specs = {c["name"]: c for c in old["conditions"]}
            for c in manifest["conditions"]:
                if c["name"] in specs and specs[c["name"]] != c:
                    raise ConfigError(
                        f"{self.root} already holds condition {c['name']!r} with another spec "
                        f"({specs[c['name']]} vs {c}); rename the condition or use a new out_dir")
            if old.get("policy") != manifest["policy"]:
                raise ConfigError(f"{self.root} holds episodes of policy {old.get('policy')!r}, not "
                                  f"{manifest['policy']!r}: their results would mix; use a new out_dir")
            if old.get("baseline") != manifest["baseline"] and old.get("baseline") in specs:
                raise ConfigError(f"{self.root} was run with baseline {old['baseline']!r}, "
                                  f"not {manifest['baseline']!r}")
            manifest = {**manifest,
                        "tasks": list(dict.fromkeys(old["tasks"] + manifest["tasks"])),
                        "seeds": list(dict.fromkeys(old["seeds"] + manifest["seeds"])),
                        "conditions": list({c["name"]: c for c in old["conditions"] + manifest["conditions"]}.values()),
                        "created": old.get("created", manifest["created"])}  # fmt: skip
        _atomic_write(self.manifest_path, _dumps(manifest))
        return manifest

    def write(self, rec: EpisodeRecord, spec: dict, errors: list[str]) -> None:
        """Arrays, then video, then the JSON that marks the episode as written."""
        from safetensors.numpy import save

        key = rec.key
        arrays = {k: np.ascontiguousarray(v) for k, v in rec.arrays().items()}
        _atomic_write(self.path(key, ".safetensors"), save(arrays))
        video = None
        if rec.frames is not None and len(rec.frames):
            video = self._write_video(key, rec.frames)
        doc = {
            "format": EPISODE_FORMAT, "key": key, "task": rec.task, "condition": rec.condition, "seed": rec.seed,
            "condition_spec": spec, "instruction": rec.instruction, "status": rec.status, "error": rec.error,
            "success": rec.success, "length": rec.length, "max_steps": rec.max_steps,
            "target_object": rec.target_object, "attempts": rec.attempts, "errors": errors,
            "wall_s": round(rec.wall_s, 3), "metrics": episode_metrics(rec) if rec.status != "crashed" else None,
            "notes": rec.notes, "arrays": f"{key}.safetensors", "video": video,
        }  # fmt: skip
        _atomic_write(self.path(key, ".json"), _dumps(doc))

    def _write_video(self, key: str, frames: np.ndarray) -> str:
        import imageio.v2 as imageio

        final = self.path(key, ".mp4")
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.mp4")
        imageio.mimwrite(tmp, list(frames), fps=10, macro_block_size=1)
        os.replace(tmp, final)
        return final.name

    def read(self, key: str) -> dict | None:
        path = self.path(key, ".json")
        return json.loads(path.read_text()) if path.is_file() else None

    def load_record(self, key: str) -> EpisodeRecord:
        """The full :class:`EpisodeRecord` of an episode (trajectories included; no frames)."""
        from safetensors.numpy import load_file

        doc = self.read(key)
        if doc is None:
            raise UnknownNameError("episode", key, [p.stem for p in self.episodes.glob("*.json")])
        arrays = load_file(self.path(key, ".safetensors"))
        traces = {k[len("trace."):]: v for k, v in arrays.items() if k.startswith("trace.")}
        fields_ = {k: doc[k] for k in ("task", "condition", "seed", "instruction", "status", "error", "success",
                                       "length", "max_steps", "target_object", "attempts")}  # fmt: skip
        # (a field added since the record was written keeps its empty default)
        return EpisodeRecord(**fields_, **{k: arrays[k] for k in ARRAY_FIELDS if k in arrays}, traces=traces,
                             notes=doc["notes"], wall_s=doc["wall_s"])  # fmt: skip


# ------------------------------------------------------------------------------------ results
@dataclass
class SweepResults:
    """What a sweep produced (also what ``results.json`` holds).

    Attributes:
        out_dir: the run folder.
        rows: one dict per episode (the rows of ``results.csv``).
        summary: per condition: counts and, per task and ``"all"``, each metric's mean, 95% bootstrap
            interval and test against the baseline (:func:`arrcoc_steer.eval.stats.summarize`).
        windows: per task, the matched window (steps) of the length-controlled metrics.
        controls: per concept condition, the percentile of its effect among its random controls.
        closed_loop: per closed-loop condition, the comparison with the nearest fixed steer.
        crashed: keys of episodes that stayed crashed.
        timing: episodes run in this call, wall time, episodes per minute, backend, workers.
    """

    out_dir: Path
    rows: list[dict]
    summary: dict
    windows: dict[str, int]
    controls: dict = field(default_factory=dict)
    closed_loop: dict = field(default_factory=dict)
    crashed: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)

    def mean(self, condition: str, metric: str, task: str = "all") -> float:
        return self.summary[condition]["tasks"][task][metric]["mean"]

    def effect(self, condition: str, metric: str, task: str = "all") -> dict:
        """The paired test of ``condition`` against the baseline on ``metric``."""
        return self.summary[condition]["tasks"][task][metric]["vs_baseline"]

    def by_suite(self, metric: str = "success") -> dict[str, dict[str, float]]:
        """Per condition, the mean of ``metric`` over the episodes of each suite (and ``"all"``)."""
        import envs

        out: dict[str, dict[str, float]] = {}
        for cond in self.summary:
            values: dict[str, list] = {}
            for r in self.rows:
                if r["condition"] == cond and r["status"] != "crashed" and r.get(metric) is not None:
                    values.setdefault(envs.get_task(r["task"]).suite, []).append(float(r[metric]))
            out[cond] = {suite: float(np.mean(v)) for suite, v in values.items()}
            if out[cond]:
                out[cond]["mean over suites"] = float(np.mean(list(out[cond].values())))
        return out

    def format_by_suite(self, metric: str = "success") -> str:
        """A plain-text table of :meth:`by_suite`, with episode counts."""
        table = self.by_suite(metric)
        suites = list(dict.fromkeys(k for row in table.values() for k in row))
        lines = [f"{metric + ' by suite':34s}" + "".join(f"{s:>18s}" for s in suites)]
        for cond, row in table.items():
            lines.append(f"{cond:34s}" + "".join(f"{row.get(s, float('nan')):>18.3f}" for s in suites))
        return "\n".join(lines)

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per condition, how many episodes ended in each of :data:`~arrcoc_steer.eval.metrics.OUTCOMES`."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows:
            if r.get("outcome"):
                counts = out.setdefault(r["condition"], dict.fromkeys(OUTCOMES, 0))
                counts[r["outcome"]] += 1
        return out

    def format_outcomes(self) -> str:
        """A plain-text table of :meth:`outcomes` (the outcomes that occur at all)."""
        table = self.outcomes()
        seen = [o for o in OUTCOMES if any(row[o] for row in table.values())]
        lines = [f"{'outcomes':34s}" + "".join(f"  {o}" for o in seen)]
        for cond, row in table.items():
            lines.append(f"{cond:34s}" + "".join(f"{row[o]:>{len(o) + 2}d}" for o in seen))
        return "\n".join(lines)

    def format(self, metrics: Sequence[str] = ("success", "speed_w", "length")) -> str:
        """A plain-text table: per condition, mean [95% CI] and % change vs baseline (all tasks)."""
        lines = [f"{'condition':34s}" + "".join(f"{m:>30s}" for m in metrics)]
        for name, entry in self.summary.items():
            cells = []
            for m in metrics:
                s = entry["tasks"]["all"][m]
                cell = f"{s['mean']:.3g} [{s['ci'][0]:.3g}, {s['ci'][1]:.3g}]"
                if "vs_baseline" in s and s["vs_baseline"]["pct_change"] == s["vs_baseline"]["pct_change"]:
                    cell += f" {s['vs_baseline']['pct_change']:+.0f}%"
                cells.append(f"{cell:>30s}")
            lines.append(f"{name:34s}" + "".join(cells))
        return "\n".join(lines)

    def markdown(self, metrics: Sequence[str] = ("speed_w", "peak_ee_z")) -> str:
        """A Markdown table for a README or an issue: per condition, each metric's % change vs the
        baseline (paired Wilcoxon p, Cohen's d_z), success as k/n, and where a steer has matched
        random controls, its percentile among them (and among those that succeed as often); the
        controls themselves collapse into one row per steer (median and range of their effects)."""
        controlled = {c for entry in self.controls.values() for c in entry["controls"]}
        if not metrics:
            raise ConfigError("markdown() needs at least one metric")
        head = ["condition", *(f"{m} vs baseline (p, d)" for m in metrics), "success", "vs random controls"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def number(x) -> float:  # results.json writes NaN as null
            return float("nan") if x is None else float(x)

        def change(name: str, m: str) -> str:
            t = self.summary[name]["tasks"]["all"][m].get("vs_baseline")
            if not t or not math.isfinite(number(t["pct_change"])):
                return f"{number(self.mean(name, m)):.3g}"
            return f"{t['pct_change']:+.1f}% ({number(t['wilcoxon_p']):.1g}, {number(t['cohens_dz']):+.2f})"

        def wins(name: str) -> int:
            ok = self.summary[name]["tasks"]["all"]["success"]
            return round(number(ok["mean"]) * ok["n"]) if ok["n"] else 0

        for name in self.summary:
            if name in controlled:
                continue
            pct = self.controls.get(name, {}).get(metrics[0])
            versus = f"{number(pct['percentile']):.1f}th pct of {pct['n_controls']}" if pct else ""
            keep = self.controls.get(name, {}).get("keeping", {}).get(metrics[0])
            if keep and keep["n_controls"]:
                versus += f"; {number(keep['percentile']):.1f}th of the {keep['n_controls']} that succeed as often"
            n = self.summary[name]["tasks"]["all"]["success"]["n"]
            cells = [name, *(change(name, m) for m in metrics), f"{wins(name)}/{n}", versus]
            lines.append("| " + " | ".join(cells) + " |")
            if pct:
                ctl = self.controls[name]["controls"]
                effects = [number(self.effect(c, metrics[0])["pct_change"]) for c in ctl]
                cells = [f"{len(ctl)} matched random controls",
                         f"median {np.median(effects):+.1f}% ({min(effects):+.1f} .. {max(effects):+.1f})",
                         *[""] * (len(metrics) - 1), f"{min(map(wins, ctl))} .. {max(map(wins, ctl))}", ""]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _row(doc: dict) -> dict:
    row = {k: doc[k] for k in ("task", "condition", "seed", "status", "attempts", "instruction", "error")}
    row.update(dict.fromkeys(EPISODE_METRICS), **(doc["metrics"] or {}))
    # metrics added to the library after the episode ran: recomputed from its arrays by aggregate()
    row["_backfill"] = bool(doc["metrics"]) and not set(EPISODE_METRICS) <= set(doc["metrics"])
    notes = doc.get("notes") or {}
    row.update(in_band=notes.get("in_band"), reference=notes.get("reference"),
               target_ratio=notes.get("target_ratio"), tolerance=notes.get("tolerance"))  # fmt: skip
    return row


def aggregate(out_dir: str | Path, *, window: int | str = "min", metrics: Sequence[str] = METRICS,
              seed: int = 0, timing: dict | None = None) -> SweepResults:
    """Read every planned episode of a run folder, compute the statistics, write results.json / .csv."""
    from safetensors.numpy import load_file

    from .conditions import ClosedLoop, Concept, condition_from_dict

    folder = RunFolder(out_dir)
    manifest = folder.read_manifest()
    if manifest is None:
        raise ConfigError(f"{out_dir} is not a sweep folder (no sweep.json)")
    conditions = [condition_from_dict(c) for c in manifest["conditions"]]
    rows, missing = [], []
    for task in manifest["tasks"]:
        for c in conditions:
            for s in manifest["seeds"]:
                doc = folder.read(episode_key(task, c.name, s))
                (rows.append(_row(doc)) if doc else missing.append(episode_key(task, c.name, s)))
    windows = matched_windows(rows, window)
    for r in rows:
        r["window"] = windows[r["task"]]
        backfill = r.pop("_backfill")
        empty = dict.fromkeys((*WINDOWED_METRICS, "window_steps", "outcome"))
        if r["status"] != "crashed":
            arrays = load_file(folder.path(episode_key(r["task"], r["condition"], r["seed"]), ".safetensors"))
            empty = windowed_metrics(arrays["ee_pos"], windows[r["task"]])
            if backfill:
                fields = {k: v for k, v in arrays.items() if k in ARRAY_FIELDS}
                fresh = episode_metrics(EpisodeRecord(r["task"], r["condition"], r["seed"], success=bool(r["success"]),
                                                      length=int(r["length"]), **fields))  # fmt: skip
                empty.update({k: v for k, v in fresh.items() if r.get(k) is None})
            empty["outcome"] = episode_outcome(bool(r["success"]), arrays.get("grasped", np.zeros(0)),
                                               arrays.get("target_pose", np.zeros((0, 7))),
                                               arrays.get("destination_pose", np.zeros((0, 7))),
                                               *_first_step(r["task"]))  # fmt: skip
        r.update(empty)
    baseline = manifest["baseline"]
    if baseline is not None and baseline not in {r["condition"] for r in rows}:
        baseline = None  # nothing of it ran yet
    summary = summarize(rows, metrics, baseline=baseline, seed=seed) if rows else {}
    crashed = [_key(r) for r in rows if r["status"] == "crashed"]
    results = SweepResults(Path(out_dir), rows, summary, windows, crashed=crashed, timing=timing or {},
                           controls=control_summary(summary, conditions, metrics))
    fixed = [c.name for c in conditions if type(c) is Concept]
    for c in conditions:
        if isinstance(c, ClosedLoop) and baseline and fixed and c.name in summary:
            try:
                results.closed_loop[c.name] = compare_to_fixed(rows, c.name, fixed, baseline=baseline, seed=seed)
            except ConfigError as e:  # nothing paired to compare yet
                results.closed_loop[c.name] = {"error": str(e)}
    doc = {"format": SWEEP_FORMAT, "manifest": manifest, "windows": windows, "summary": summary,
           "controls": results.controls, "closed_loop": results.closed_loop, "outcomes": results.outcomes(),
           "crashed": results.crashed,
           "missing": missing, "timing": results.timing}  # fmt: skip
    _atomic_write(folder.root / "results.json", _dumps(doc))
    _atomic_write(folder.root / "results.csv", _csv(rows))
    return results


def _first_step(task: str) -> tuple[bool, int]:
    """(does the first subgoal of ``task`` push its target rather than grasp it, how many subgoals)"""
    import envs

    try:
        subgoals = envs.get_task(task).subgoals
    except UnknownNameError:  # a task registered elsewhere: judged as a one-step pick task
        return False, 1
    return subgoals[0].kind == "push", len(subgoals)


def _key(row: Mapping) -> str:
    return episode_key(row["task"], row["condition"], row["seed"])


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
                         for k, v in r.items()})  # fmt: skip
    return buf.getvalue().encode()


# ----------------------------------------------------------------------------------- evaluate
def evaluate(
    policy: Any,
    tasks: str | Iterable[str],
    conditions: Iterable[Condition | Mapping | str] = ("unsteered",),
    seeds: int | Iterable[int] = 10,
    out_dir: str | Path = "runs/eval",
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    baseline: str | None = "unsteered",
    retries: int = 2,
    window: int | str = "min",
    frames: str | None = None,
    video_seeds: int = 1,
    max_steps: int | None = None,
    env_kwargs: dict | None = None,
    progress: bool = True,
) -> SweepResults:
    """Run (or resume) a sweep of ``policy`` over ``tasks`` x ``conditions`` x ``seeds``; aggregate it.

    Args:
        policy: a policy object, a function ``(observation, instruction) -> action``, ``"expert"``, or
            a MiniVLA checkpoint directory (loaded in each worker). Process / Ray workers need it
            picklable (a path, or an instance of a module-level class).
        tasks: task names, suite names or ``"all"``.
        conditions: condition specs, dicts (``{"kind": ...}``) or bare kinds (``"unsteered"``).
        seeds: a number of fresh seeds or a list of env seeds; every condition runs every seed.
        out_dir: the run folder (created; resumed when it exists).
        backend: ``"local"`` (process pool), ``"serial"`` or ``"ray"``; workers: processes / actors
            (default all cores; ``local`` with 1 worker runs in this process); address: a Ray cluster.
        baseline: the condition every other is paired with (and closed-loop references come from).
        retries: re-runs of a crashed episode in this call.
        window: ``"min"`` or a number of steps: the matched window of the length-controlled metrics.
        frames: ``"agentview"`` or ``"wrist"`` writes an mp4 for the first ``video_seeds`` seeds of
            every task and condition.
        max_steps: cap on episode length (default: each task's own limit).
        env_kwargs: extra arguments of :func:`envs.make` (e.g. ``image_size``).
        progress: show a tqdm bar.
    """
    plan = _plan(policy, tasks, conditions, seeds, baseline)
    check_backend(backend, workers, address)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an int >= 0, got {retries!r}")
    matched_windows([], window)  # validate before anything is written
    folder = RunFolder(out_dir)
    folder.merge_manifest({
        "format": SWEEP_FORMAT, "policy": describe_policy(policy), "baseline": baseline,
        "tasks": plan.tasks, "seeds": plan.seeds, "conditions": [c.to_dict() for c in plan.conditions],
        "window": window, "max_steps": max_steps, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })  # fmt: skip
    filmed = set(plan.seeds[:video_seeds]) if frames else set()
    jobs = [Job(t, s, c, frames=frames if s in filmed else None, max_steps=max_steps)
            for c in plan.conditions for t in plan.tasks for s in plan.seeds]  # fmt: skip
    history = {j.key: folder.read(j.key) for j in jobs}
    todo = [replace(j, attempt=(history[j.key] or {}).get("attempts", 0) + 1) for j in jobs
            if (history[j.key] or {}).get("status") not in DONE]  # fmt: skip
    timing = {"episodes_run": 0, "backend": None, "workers": 0, "wall_s": 0.0, "episodes_per_minute": None}
    if todo:
        from tqdm.auto import tqdm

        started = time.perf_counter()
        with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="episodes", disable=not progress) as bar, \
                make_backend(backend, policy, workers=workers, address=address, env_kwargs=env_kwargs) as runner:
            ran = _run_phases(runner, todo, folder, history, retries, bar, baseline, plan)
        wall = time.perf_counter() - started
        timing.update(episodes_run=ran, backend=runner.name, workers=runner.workers, wall_s=round(wall, 2),
                      episodes_per_minute=round(60 * ran / wall, 2))  # fmt: skip
    return aggregate(out_dir, window=window, timing=timing)


@dataclass
class _Plan:
    tasks: list[str]
    seeds: list[int]
    conditions: list[Condition]


def _plan(policy, tasks, conditions, seeds, baseline) -> _Plan:
    """Validate what a sweep is asked to do (names, seeds, files, policy) before anything runs."""
    check_policy_source(policy)
    task_names = resolve_tasks(tasks)
    seed_list = fresh_seeds(seeds) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        raise ConfigError(f"seeds must be distinct non-negative ints, got {seed_list}")
    conditions = [conditions] if isinstance(conditions, str) else conditions
    conds = [as_condition(c).with_absolute_paths() for c in conditions]
    names = [c.name for c in conds]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"condition names must be unique in a sweep; repeated: {dupes}")
    if not conds:
        raise ConfigError("a sweep needs at least one condition")
    if baseline is not None and baseline not in names:
        raise UnknownNameError("baseline condition", baseline, names)
    if baseline is None and any(c.needs_reference for c in conds):
        raise ConfigError("closed-loop conditions without a reference need a baseline condition to measure it on")
    resources = Resources()
    for c in conds:
        c.check_files(resources)
        if not isinstance(policy, (str, Path)):  # a path is loaded in the workers; they check it there
            c.check_policy(as_policy(policy))
    return _Plan(task_names, seed_list, conds)


def _run_phases(runner, todo: list[Job], folder: RunFolder, history: dict, retries: int, bar, baseline, plan) -> int:
    """Everything that needs no reference first; then closed-loop jobs with the baseline's reference."""
    ran = _run(runner, [j for j in todo if not j.condition.needs_reference], folder, history, retries, bar)
    later = [j for j in todo if j.condition.needs_reference]
    if later:
        refs = _references(folder, plan.tasks, plan.seeds, baseline)
        ran += _run(runner, [replace(j, reference=refs.get(j.task)) for j in later], folder, history, retries, bar)
    return ran


def _run(runner, jobs: list[Job], folder: RunFolder, history: dict, retries: int, bar) -> int:
    """Run ``jobs``, write each record, retry crashes ``retries`` times; returns episodes run."""
    ran = 0
    counts = {"ok": 0, "policy_error": 0, "crashed": 0}
    for round_ in range(retries + 1):
        crashed = []
        by_key = {j.key: j for j in jobs}
        for rec in runner.run(jobs):
            ran += 1
            job = by_key[rec.key]
            errors = list((history.get(rec.key) or {}).get("errors", []))
            if rec.status == "crashed":
                errors.append(rec.error)
                crashed.append(replace(job, attempt=job.attempt + 1))
            folder.write(rec, job.condition.to_dict(), errors)
            history[rec.key] = {"errors": errors, "attempts": rec.attempts, "status": rec.status}
            if rec.status != "crashed" or round_ == retries:
                counts[rec.status] += 1
                bar.set_postfix(counts, refresh=False)
                bar.update()
        if not crashed:
            break
        jobs = crashed
    return ran


def _references(folder: RunFolder, tasks: list[str], seeds: list[int], baseline: str) -> dict[str, float]:
    """Per task, the baseline's mean end-effector speed (m/s): ``speed_mean`` over its ok episodes."""
    refs = {}
    for task in tasks:
        speeds = [doc["metrics"]["speed_mean"] for s in seeds
                  if (doc := folder.read(episode_key(task, baseline, s))) and doc["status"] == "ok"
                  and doc["metrics"]["speed_mean"] is not None]  # fmt: skip
        if speeds and np.mean(speeds) > 0:
            refs[task] = float(np.mean(speeds))
    return refs


def load_results(out_dir: str | Path) -> dict:
    """``results.json`` of a run folder, as a dict."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise ConfigError(f"{out_dir} has no results.json; run evaluate() on it first")
    return json.loads(path.read_text())
