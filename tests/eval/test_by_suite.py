from arrcoc_steer.eval import evaluate


def test_success_by_suite_averages_the_episodes_of_each_suite(tmp_path):
    policy = lambda obs, instruction: [0, 0, 0, 0, 0, 0, -1]  # never succeeds  # noqa: E731
    res = evaluate("expert", ["LiftRedBlock"], ["unsteered"], seeds=2, out_dir=tmp_path / "a", backend="serial",
                   progress=False)  # fmt: skip
    table = res.by_suite("success")
    assert table == {"unsteered": {"goal": 1.0, "mean over suites": 1.0}}
    res = evaluate(policy, ["PickRedBlockIntoTray", "LiftRedBlock"], ["unsteered"], seeds=1, out_dir=tmp_path / "b",
                   backend="serial", max_steps=3, progress=False)  # fmt: skip
    assert res.by_suite("success")["unsteered"] == {"object": 0.0, "goal": 0.0, "mean over suites": 0.0}
    assert "object" in res.format_by_suite()
    assert {r["outcome"] for r in res.rows} == {"target never grasped"}  # the hand never closed on it
    assert res.outcomes()["unsteered"]["target never grasped"] == 2
    assert "target never grasped" in res.format_outcomes()
    assert "outcome" in (tmp_path / "b" / "results.csv").read_text().splitlines()[0].split(",")
