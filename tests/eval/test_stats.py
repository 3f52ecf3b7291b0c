"""Statistics: bootstrap intervals, paired tests, effect sizes, control percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from arrcoc_steer.eval import stats


def test_bootstrap_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(0).normal(1.0, 0.2, 40)
    lo, hi = stats.bootstrap_ci(x, seed=3)
    assert (lo, hi) == stats.bootstrap_ci(x, seed=3)
    assert lo < x.mean() < hi
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert stats.bootstrap_ci([2.0]) == (2.0, 2.0) and np.isnan(stats.bootstrap_ci([])[0])


def test_paired_test_matches_scipy_and_textbook_effect_sizes():
    rng = np.random.default_rng(1)
    base = rng.normal(0.15, 0.02, 30)
    treated = base * 1.2 + rng.normal(0, 0.01, 30)
    t = stats.paired_test(treated, base)
    d = treated - base
    assert t["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert t["t_p"] == pytest.approx(sps.ttest_rel(treated, base).pvalue)
    assert t["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert t["pct_change"] == pytest.approx(100 * d.mean() / base.mean())
    assert t["diff_ci"][0] < d.mean() < t["diff_ci"][1]
    assert stats.paired_test(base + 1, base)["rank_biserial"] == 1.0
    assert stats.paired_test(base - 1, base)["rank_biserial"] == -1.0


def test_paired_test_drops_unpaired_values_and_handles_no_difference():
    t = stats.paired_test([1.0, None, 3.0, float("nan")], [1.0, 2.0, 3.0, 4.0])
    assert t["n"] == 2 and t["wilcoxon_p"] == 1.0 and t["t_p"] == 1.0 and t["mean_diff"] == 0


def test_success_gets_an_exact_mcnemar_test():
    base = np.array([1] * 20 + [0] * 0, float)
    treated = base.copy()
    treated[:9] = 0
    t = stats.paired_test(treated, base, binary=True)
    assert (t["gained"], t["lost"]) == (0, 9)
    assert t["mcnemar_p"] == pytest.approx(2 * 0.5**9)


def test_control_percentile():
    controls = np.linspace(-30, 20, 21)
    inside = stats.control_percentile(0.0, controls)
    assert 40 < inside["percentile"] < 70 and inside["p_two_sided"] > 0.5 and inside["sufficient"]
    beyond = stats.control_percentile(45.0, controls)
    assert beyond["percentile"] == 100.0 and beyond["p_two_sided"] == pytest.approx(2 / 22)
    assert not stats.control_percentile(1.0, controls[:5])["sufficient"]


def test_control_summary_also_ranks_a_steer_among_the_controls_that_keep_the_task():
    """A slowing steer that keeps the task, against controls that slow more only by breaking it."""
    from arrcoc_steer.eval import Concept
    from arrcoc_steer.eval.conditions import RandomControl

    steer = Concept(concepts="c.yaml", concept="slow", alpha=2.0, name="slow")
    controls = [RandomControl(**steer.steer_fields(), seed=i) for i in range(6)]
    effects = [-80.0, -60.0, -20.0, -10.0, -5.0, 5.0]
    success = [0.0, 0.2, 0.9, 0.9, 1.0, 0.8]

    def entry(pct: float, ok: float) -> dict:
        return {"tasks": {"all": {"speed_w": {"vs_baseline": {"pct_change": pct}}, "success": {"mean": ok}}}}

    summary = {"slow": entry(-40.0, 0.9), **{c.name: entry(e, ok) for c, e, ok in zip(controls, effects, success)}}
    out = stats.control_summary(summary, [steer, *controls], ["speed_w"])["slow"]
    assert out["speed_w"]["n_controls"] == 6 and out["speed_w"]["percentile"] == pytest.approx(100 * 2 / 6)
    kept = out["keeping"]
    assert kept["controls"] == [controls[i].name for i in (2, 3, 4)]  # success >= the steer's 0.9
    assert kept["speed_w"]["n_controls"] == 3 and kept["speed_w"]["percentile"] == 0.0


def rows(condition: str, values, tasks=("a", "b")) -> list[dict]:
    return [{"task": t, "condition": condition, "seed": s, "status": "ok", "success": 1.0, "speed_w": v}
            for t in tasks for s, v in enumerate(values)]


def test_summarize_pairs_by_task_and_seed_in_any_order():
    base = rows("unsteered", [1.0, 2.0, 3.0, 4.0])
    fast = rows("fast", [1.5, 3.0, 4.5, 6.0])[::-1]
    fast.append({"task": "a", "condition": "fast", "seed": 9, "status": "crashed", "success": None, "speed_w": None})
    s = stats.summarize(base + fast, ["success", "speed_w"])
    assert s["fast"]["n_crashed"] == 1 and s["fast"]["n_episodes"] == 9
    e = s["fast"]["tasks"]["all"]["speed_w"]["vs_baseline"]
    assert e["n"] == 8 and e["pct_change"] == pytest.approx(50.0)
    assert s["fast"]["tasks"]["a"]["speed_w"]["mean"] == pytest.approx(3.75)
    assert "vs_baseline" not in s["unsteered"]["tasks"]["all"]["speed_w"]


def test_compare_to_fixed_picks_the_nearest_mean_effect():
    base = rows("unsteered", [1.0] * 8)
    closed = rows("closed", [1.28, 1.32] * 4)
    for r in closed:
        r.update(target_ratio=1.3, tolerance=0.1)
    fixed_a = rows("alpha2", [1.0, 1.6] * 4)  # mean 1.3, spread wide
    fixed_b = rows("alpha8", [2.0] * 8)
    out = stats.compare_to_fixed(base + closed + fixed_a + fixed_b, "closed", ["alpha2", "alpha8"])
    assert out["fixed"]["condition"] == "alpha2"
    assert out["closed_loop"]["std_effect"] < out["fixed"]["std_effect"]
    assert out["closed_loop"]["in_band"] == 1.0 and out["fixed"]["in_band"] == 0.0
    assert out["spread_p"] < 0.05
