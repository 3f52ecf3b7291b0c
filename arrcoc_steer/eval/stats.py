"""Statistics over episodes: bootstrap intervals, paired tests, effect sizes, control percentiles.

Every condition is compared with the baseline (unsteered) run on the SAME tasks and seeds, so each
episode has a twin that started from the same state; tests are on the paired differences
``d = treated - baseline`` (pairs where both values are finite):

* mean with a 95% percentile-bootstrap interval (10,000 resamples, seeded: identical on rerun);
* ``wilcoxon_p``: Wilcoxon signed-rank test (scipy, zero differences dropped; 1.0 if all are zero),
  with the matched-pairs rank-biserial correlation ``rank_biserial = (R+ - R-) / (R+ + R-)``;
* ``t_p``: paired t-test, with Cohen's ``d_z = mean(d) / sd(d)`` for paired samples;
* ``mcnemar_p`` for binary metrics (success): exact binomial test on the discordant pairs;
* ``pct_change = 100 * mean(d) / |mean(baseline)|``, and a bootstrap interval of ``mean(d)``.

Effects are only claimed against controls (DESIGN.md): :func:`control_percentile` places a
concept's effect in the distribution of the effects of >= 20 random-neuron control sets matched to
it (same layers, sizes, alpha), with an empirical two-sided p-value.

>>> import numpy as np
>>> base = np.array([1.0, 1.1, 0.9, 1.0, 1.2, 0.95]); fast = base * 1.3
>>> t = paired_test(fast, base)
>>> round(t["pct_change"], 1), t["n"], t["wilcoxon_p"] < 0.05
(30.0, 6, True)
>>> control_percentile(30.0, list(range(-10, 10)))["percentile"]
100.0
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, UnknownNameError

N_BOOT = 10_000
LEVEL = 0.95
MIN_CONTROLS = 20
NAN = float("nan")


def _finite(x) -> np.ndarray:
    x = np.asarray([NAN if v is None else v for v in x], np.float64)
    return x[np.isfinite(x)]


def bootstrap_ci(values: Sequence[float], *, level: float = LEVEL, n_boot: int = N_BOOT,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (non-finite values dropped).

    The resamples depend only on ``(len(values), n_boot, seed)`` and are shared by every call with
    those (common random numbers: one sweep's metrics are resampled alike, and fast).
    """
    x = _finite(values)
    if len(x) == 0:
        return NAN, NAN
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    # einsum, not BLAS: a memory-bound product that multi-threaded BLAS slows down 7x on a busy machine
    means = np.einsum("bn,n->b", _resample_counts(len(x), n_boot, seed), x.astype(np.float32)) / len(x)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


@functools.lru_cache(maxsize=4)
def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) float32: how often each value appears in each resample (rows sum to n)."""
    rng = np.random.default_rng(seed)
    counts = np.empty((n_boot, n), np.float32)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        idx = rng.integers(0, n, (rows, n)) + n * np.arange(rows)[:, None]
        counts[start : start + rows] = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n)
    counts.flags.writeable = False
    return counts


def describe(values: Sequence[float], *, seed: int = 0) -> dict[str, float | int | list]:
    """``mean``, ``ci`` (95% bootstrap), ``std`` (ddof 1) and ``n`` of the finite ``values``."""
    x = _finite(values)
    return {
        "mean": float(x.mean()) if len(x) else NAN,
        "ci": list(bootstrap_ci(x, seed=seed)),
        "std": float(x.std(ddof=1)) if len(x) > 1 else NAN,
        "n": int(len(x)),
    }


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of the differences ``d`` (zeros dropped)."""
    from scipy.stats import rankdata

    d = d[d != 0]
    if len(d) == 0:
        return 0.0
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def paired_test(treated: Sequence[float], baseline: Sequence[float], *, binary: bool = False, seed: int = 0) -> dict:
    """Compare paired samples (same tasks and seeds, same order); module docstring for the fields."""
    from scipy import stats

    t = np.asarray([NAN if v is None else v for v in treated], np.float64)
    b = np.asarray([NAN if v is None else v for v in baseline], np.float64)
    if t.shape != b.shape:
        raise ConfigError(f"paired_test needs samples of equal length, got {len(t)} and {len(b)}")
    keep = np.isfinite(t) & np.isfinite(b)
    t, b = t[keep], b[keep]
    d = t - b
    out = {"n": int(len(d)), "mean_treated": NAN, "mean_baseline": NAN, "mean_diff": NAN, "diff_ci": [NAN, NAN],
           "pct_change": NAN, "wilcoxon_p": NAN, "rank_biserial": NAN, "t_p": NAN, "cohens_dz": NAN}  # fmt: skip
    if len(d) == 0:
        return out
    out.update(mean_treated=float(t.mean()), mean_baseline=float(b.mean()), mean_diff=float(d.mean()),
               diff_ci=list(bootstrap_ci(d, seed=seed)))  # fmt: skip
    if b.mean() != 0:
        out["pct_change"] = float(100 * d.mean() / abs(b.mean()))
    out["rank_biserial"] = rank_biserial(d)
    if np.all(d == 0):
        out["wilcoxon_p"] = 1.0
    else:
        out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    if sd > 0:
        out["cohens_dz"] = float(d.mean() / sd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["t_p"] = float(stats.ttest_rel(t, b).pvalue)
    elif len(d) > 1:
        out["t_p"] = 1.0 if d.mean() == 0 else 0.0
    if binary:
        gained, lost = int(np.sum((t > 0.5) & (b < 0.5))), int(np.sum((t < 0.5) & (b > 0.5)))
        out["mcnemar_p"] = float(stats.binomtest(gained, gained + lost, 0.5).pvalue) if gained + lost else 1.0
        out["gained"], out["lost"] = gained, lost
    return out


def control_percentile(effect: float, control_effects: Sequence[float]) -> dict:
    """Where ``effect`` falls among the effects of matched random controls.

    ``percentile``: % of controls below the effect (ties count half); ``p_two_sided``: empirical
    ``min(1, 2 * min(1 + #{c >= e}, 1 + #{c <= e}) / (n + 1))``; ``sufficient``: n >= 20;
    ``band``: the controls' central 95% range.
    """
    c = _finite(control_effects)
    n = len(c)
    if n == 0 or not math.isfinite(effect):
        return {"effect": effect, "n_controls": n, "percentile": NAN, "p_two_sided": NAN,
                "band": [NAN, NAN], "sufficient": False}  # fmt: skip
    below, ties = np.sum(c < effect), np.sum(c == effect)
    p_hi, p_lo = (1 + np.sum(c >= effect)) / (n + 1), (1 + np.sum(c <= effect)) / (n + 1)
    return {
        "effect": float(effect),
        "n_controls": int(n),
        "percentile": float(100 * (below + 0.5 * ties) / n),
        "p_two_sided": float(min(1.0, 2 * min(p_hi, p_lo))),
        "band": [float(v) for v in np.percentile(c, [2.5, 97.5])],
        "sufficient": n >= MIN_CONTROLS,
    }


# --------------------------------------------------------------------------------- per sweep
def _paired(rows_t: list[Mapping], rows_b: Mapping[tuple, Mapping], metric: str) -> tuple[list, list]:
    t, b = [], []
    for r in rows_t:
        twin = rows_b.get((r["task"], r["seed"]))
        if twin is not None:
            t.append(r.get(metric))
            b.append(twin.get(metric))
    return t, b


def summarize(rows: Iterable[Mapping], metrics: Sequence[str], *, baseline: str | None = "unsteered",
              seed: int = 0) -> dict:
    """Per condition, per task and over all tasks (``"all"``): :func:`describe` of each metric and,
    against ``baseline``, :func:`paired_test` on the same (task, seed) pairs.

    ``rows`` are episode rows (``task``, ``condition``, ``seed``, ``status`` and metric values);
    crashed episodes are counted and left out of every statistic.
    """
    from .metrics import BINARY_METRICS

    rows = list(rows)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    if baseline is not None and baseline not in conditions:
        raise UnknownNameError("baseline condition", baseline, conditions)
    groups: dict[str, list] = defaultdict(list)
    for r in rows:
        groups[r["condition"]].append(r)
    base = {(r["task"], r["seed"]): r for r in groups.get(baseline, []) if r["status"] != "crashed"}
    out = {}
    for name in conditions:
        ran = [r for r in groups[name] if r["status"] != "crashed"]
        entry = {
            "n_episodes": len(groups[name]),
            "n_crashed": len(groups[name]) - len(ran),
            "n_policy_errors": sum(r["status"] == "policy_error" for r in ran),
            "tasks": {},
        }
        tasks = ["all", *dict.fromkeys(r["task"] for r in ran)]
        for task in tasks:
            sub = ran if task == "all" else [r for r in ran if r["task"] == task]
            stats_ = {}
            for m in metrics:
                stats_[m] = describe([r.get(m) for r in sub], seed=seed)
                if baseline is not None and name != baseline:
                    t, b = _paired(sub, base, m)
                    stats_[m]["vs_baseline"] = paired_test(t, b, binary=m in BINARY_METRICS, seed=seed)
            entry["tasks"][task] = stats_
        out[name] = entry
    return out


def control_summary(summary: Mapping, conditions: Sequence, metrics: Sequence[str]) -> dict:
    """For each concept or residual condition with matched random controls in the sweep (random
    neurons, random directions): per metric, the percentile of its effect (``pct_change`` over all
    tasks) among the controls' effects; and under ``"keeping"`` the same among only the controls
    that succeed at least as often as the steer. Random perturbations slow a policy by breaking it:
    the second percentile asks whether the steer moves the metric further than controls that keep
    the task as well as it does."""
    from .conditions import Concept, RandomControl, RandomDirection, Residual

    out = {}
    for concept in conditions:
        if type(concept) not in (Concept, Residual) or concept.name not in summary:
            continue
        controls = [c.name for c in conditions if isinstance(c, (RandomControl, RandomDirection))
                    and c.matches(concept) and c.name in summary]  # fmt: skip
        if not controls:
            continue

        def effect(name: str, m: str) -> float:
            return summary[name]["tasks"]["all"][m].get("vs_baseline", {}).get("pct_change", NAN)

        def success(name: str) -> float:
            value = summary[name]["tasks"]["all"]["success"].get("mean")
            return NAN if value is None else float(value)

        keeping = [c for c in controls if success(c) >= success(concept.name)]
        out[concept.name] = {"controls": controls, "keeping": {"controls": keeping}}
        for m in metrics:
            out[concept.name][m] = control_percentile(effect(concept.name, m), [effect(c, m) for c in controls])
            out[concept.name]["keeping"][m] = control_percentile(effect(concept.name, m),
                                                                 [effect(c, m) for c in keeping])
    return out


def compare_to_fixed(rows: Iterable[Mapping], closed_loop: str, fixed: Sequence[str], *, metric: str = "speed_w",
                     baseline: str = "unsteered", seed: int = 0) -> dict:
    """Closed-loop steering against the fixed-alpha condition with the nearest mean effect.

    The effect of an episode is ``metric / metric of its baseline twin``. Reported for both: the
    mean effect, success rate, and the spread of the effect across episodes (``std``), with a
    Brown-Forsythe test that the spreads are equal and each one's share of episodes whose effect
    lies within the closed loop's tolerance band of its target (when the rows carry ``target_ratio``
    and ``tolerance``).
    """
    from scipy import stats

    rows = [r for r in rows if r["status"] != "crashed"]
    base = {(r["task"], r["seed"]): r.get(metric) for r in rows if r["condition"] == baseline}

    def ratios(name: str) -> np.ndarray:
        out = [r.get(metric) / base[(r["task"], r["seed"])] for r in rows if r["condition"] == name
               and base.get((r["task"], r["seed"])) and r.get(metric) is not None]  # fmt: skip
        return _finite(out)

    def success(name: str) -> float:
        s = [r["success"] for r in rows if r["condition"] == name]
        return float(np.mean(s)) if s else NAN

    closed = ratios(closed_loop)
    if not len(closed):
        raise ConfigError(f"no paired {metric} values for closed-loop condition {closed_loop!r}")
    candidates = {name: ratios(name) for name in fixed}
    candidates = {k: v for k, v in candidates.items() if len(v)}
    if not candidates:
        raise ConfigError(f"none of the fixed conditions {list(fixed)} has paired {metric} values")
    best = min(candidates, key=lambda k: abs(candidates[k].mean() - closed.mean()))
    loop_rows = [r for r in rows if r["condition"] == closed_loop]
    target = next((r["target_ratio"] for r in loop_rows if r.get("target_ratio")), None)
    tol = next((r["tolerance"] for r in loop_rows if r.get("tolerance")), None)

    def entry(name: str, x: np.ndarray) -> dict:
        e = {"condition": name, "mean_effect": float(x.mean()), "effect_ci": list(bootstrap_ci(x, seed=seed)),
             "std_effect": float(x.std(ddof=1)) if len(x) > 1 else NAN, "success": success(name), "n": int(len(x))}
        if target and tol:
            e["in_band"] = float(np.mean(np.abs(x / target - 1) <= tol))
        return e

    same_spread = NAN
    if min(len(closed), len(candidates[best])) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # equal deviations in both groups: W is inf, p is 0
            same_spread = stats.levene(closed, candidates[best], center="median").pvalue
    return {"metric": metric, "closed_loop": entry(closed_loop, closed), "fixed": entry(best, candidates[best]),
            "spread_p": float(same_spread), "success_ratio_to_baseline": success(closed_loop) / success(baseline)
            if success(baseline) else NAN}  # fmt: skip
