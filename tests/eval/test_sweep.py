"""Sweeps: files, statistics, resuming after an interruption, crashes retried and never lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError, UnknownNameError
from arrcoc_steer.eval import ExpertPolicy, Prompt, RunFolder, evaluate, load_results, resolve_tasks

from .conftest import FAST_TASKS
from .helpers import FlakyExpert, InterruptingExpert, ShapePolicy

CONDITIONS = ["unsteered", Prompt(modifier="quickly"), Prompt(modifier="slowly")]
REPO = Path(__file__).resolve().parents[2]


def episode_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "episodes").glob("*.json"))}


def test_a_sweep_writes_every_episode_and_pairs_the_statistics(tmp_path, capsys):
    r = evaluate(ExpertPolicy(), FAST_TASKS, CONDITIONS, seeds=6, out_dir=tmp_path, backend="serial", progress=False)
    assert len(episode_files(tmp_path)) == len(r.rows) == 2 * 3 * 6
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + 36
    saved = load_results(tmp_path)
    assert saved["manifest"]["seeds"] == list(range(1_000_000, 1_000_006)) and saved["crashed"] == []
    quick, slow = r.effect("prompt_quickly", "speed_w"), r.effect("prompt_slowly", "speed_w")
    assert quick["pct_change"] > 20 and quick["wilcoxon_p"] < 0.01 and quick["n"] == 12
    assert slow["pct_change"] < -20 and slow["cohens_dz"] < 0
    assert r.effect("prompt_quickly", "success")["mcnemar_p"] == 1.0
    lo, hi = r.summary["unsteered"]["tasks"]["all"]["speed_w"]["ci"]
    assert lo <= r.mean("unsteered", "speed_w") <= hi
    # the matched window: the shortest ok episode of each task, over every condition
    for task in FAST_TASKS:
        assert r.windows[task] == min(x["length"] for x in r.rows if x["task"] == task)
    rec = RunFolder(tmp_path).load_record(f"LiftRedBlock__prompt_quickly__{1_000_000}")
    assert rec.success and rec.ee_pos.shape == (rec.length + 1, 3) and rec.instruction.endswith(" quickly")
    assert "prompt_quickly" in r.format()
    from arrcoc_steer.cli import main

    main(["report", str(tmp_path), "--markdown", "--metrics", "speed_w", "success"])
    table = capsys.readouterr().out.splitlines()
    main(["report", str(tmp_path), "--markdown", "--metrics", "speed_w", "success", "--aggregate"])
    assert capsys.readouterr().out.splitlines() == table  # results.json holds what the episodes give
    assert table[0] == "| condition | speed_w vs baseline (p, d) | success vs baseline (p, d) | success | vs random controls |"
    quick_row = next(line for line in table if line.startswith("| prompt_quickly |"))
    assert f"| {quick['pct_change']:+.1f}% (" in quick_row and len(table) == 2 + len(CONDITIONS)


def test_a_metric_added_after_the_episodes_ran_is_recomputed_from_their_arrays(tmp_path):
    from arrcoc_steer.eval.sweep import aggregate

    r = evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered"], seeds=2, out_dir=tmp_path, backend="serial",
                 progress=False)  # fmt: skip
    now = {row["seed"]: row for row in r.rows}
    assert all(0 < row["carry_ee_z"] < 1 for row in now.values())  # the expert lifts the block it holds
    for path in (tmp_path / "episodes").glob("*.json"):  # as an older version wrote them
        doc = json.loads(path.read_text())
        del doc["metrics"]["carry_ee_z"]
        path.write_text(json.dumps(doc))
    again = {row["seed"]: row for row in aggregate(tmp_path).rows}
    assert all(again[s]["carry_ee_z"] == pytest.approx(now[s]["carry_ee_z"]) for s in now)
    assert all(again[s]["speed_w"] == now[s]["speed_w"] for s in now) and "_backfill" not in again[1_000_000]


def test_resume_after_ctrl_c_runs_only_what_is_missing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        evaluate(InterruptingExpert(after=4), ["LiftRedBlock"], CONDITIONS[:2], seeds=3, out_dir=tmp_path,
                 backend="serial", progress=False)
    before = episode_files(tmp_path)
    assert len(before) == 3 and not list(tmp_path.rglob("*.tmp"))
    r = evaluate(ExpertPolicy(), ["LiftRedBlock"], CONDITIONS[:2], seeds=3, out_dir=tmp_path, backend="serial",
                 progress=False)
    after = episode_files(tmp_path)
    assert len(after) == 6 and r.timing["episodes_run"] == 3
    assert all(after[name] == data for name, data in before.items())  # finished episodes were kept


def test_resume_after_the_process_is_killed(tmp_path):
    code = (f"from arrcoc_steer.eval import evaluate; from tests.eval.helpers import SlowExpert; "
            f"evaluate(SlowExpert(), ['LiftRedBlock'], ['unsteered'], seeds=12, out_dir={str(tmp_path)!r}, "
            f"backend='serial', progress=False)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "episodes").glob("*.json"))) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the sweep wrote nothing"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = episode_files(tmp_path)
    assert 2 <= len(before) < 12
    for data in before.values():
        assert json.loads(data)["status"] == "ok"  # written whole or not at all
    r = evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered"], seeds=12, out_dir=tmp_path, backend="serial",
                 progress=False)
    after = episode_files(tmp_path)
    assert len(after) == 12 and r.timing["episodes_run"] == 12 - len(before)
    assert all(after[name] == data for name, data in before.items())


def test_crashed_episodes_are_retried_recorded_and_never_lost(tmp_path):
    seeds = [1_000_000, 1_000_001, 1_000_002]
    flaky = FlakyExpert(str(tmp_path), always=(1_000_002,))
    out = tmp_path / "run"
    r = evaluate(flaky, ["LiftRedBlock"], ["unsteered"], seeds=seeds, out_dir=out, backend="serial", retries=2,
                 progress=False)
    folder = RunFolder(out)
    ok = folder.read(f"LiftRedBlock__unsteered__{seeds[0]}")
    assert ok["status"] == "ok" and ok["attempts"] == 2 and "simulated transient failure" in ok["errors"][0]
    lost = folder.read(f"LiftRedBlock__unsteered__{seeds[2]}")
    assert lost["status"] == "crashed" and lost["attempts"] == 3 and len(lost["errors"]) == 3
    assert "simulated infrastructure failure" in lost["error"]
    assert r.crashed == [f"LiftRedBlock__unsteered__{seeds[2]}"] and r.summary["unsteered"]["n_crashed"] == 1
    assert r.summary["unsteered"]["tasks"]["all"]["success"]["n"] == 2
    assert "crashed" in (out / "results.csv").read_text()
    # the next run retries it (its first try meets the transient failure); attempts keep counting
    r = evaluate(FlakyExpert(str(tmp_path)), ["LiftRedBlock"], ["unsteered"], seeds=seeds, out_dir=out,
                 backend="serial", progress=False)
    healed = folder.read(f"LiftRedBlock__unsteered__{seeds[2]}")
    assert r.crashed == [] and healed["status"] == "ok" and healed["attempts"] == 5 and len(healed["errors"]) == 4


def test_a_policy_with_wrong_actions_fails_its_episodes_and_the_sweep_goes_on(tmp_path):
    r = evaluate(ShapePolicy(), ["LiftRedBlock"], ["unsteered"], seeds=2, out_dir=tmp_path, backend="serial",
                 progress=False)
    assert [x["status"] for x in r.rows] == ["policy_error"] * 2 and r.mean("unsteered", "success") == 0
    assert "shape (6,), expected (7,)" in (tmp_path / "results.csv").read_text()


def test_a_folder_grows_but_refuses_a_changed_condition(tmp_path):
    evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered"], seeds=2, out_dir=tmp_path, backend="serial",
             progress=False)
    r = evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered", Prompt(modifier="quickly")], seeds=2,
                 out_dir=tmp_path, backend="serial", progress=False)
    assert r.timing["episodes_run"] == 2 and len(r.rows) == 4
    with pytest.raises(ConfigError, match="already holds condition 'prompt_quickly' with another spec"):
        evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered", Prompt(name="prompt_quickly", modifier="fast")],
                 seeds=2, out_dir=tmp_path, backend="serial", progress=False)


def test_a_folder_refuses_another_policy_and_names_a_checkpoint_by_its_weights(tmp_path):
    from arrcoc_steer.eval.policies import describe_policy

    evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered"], seeds=1, out_dir=tmp_path / "run", backend="serial",
             progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="holds episodes of policy"):
        evaluate(ExpertPolicy(noise=0.5), ["LiftRedBlock"], ["unsteered"], seeds=1, out_dir=tmp_path / "run",
                 backend="serial", progress=False)  # fmt: skip
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"weights 1")
    before = describe_policy(checkpoint)
    (checkpoint / "model.safetensors").write_bytes(b"weights 2")  # same path, new weights
    assert before.startswith(str(checkpoint)) and describe_policy(checkpoint) != before


def test_bad_input_names_the_valid_choices(tmp_path):
    run = lambda **kw: evaluate(ExpertPolicy(), **{"tasks": ["LiftRedBlock"], "seeds": 1, "out_dir": tmp_path,
                                                   "backend": "serial", "progress": False, **kw})  # fmt: skip
    with pytest.raises(UnknownNameError, match="Did you mean 'LiftRedBlock'"):
        run(tasks=["LiftRedBlok"])
    with pytest.raises(UnknownNameError, match="Valid task or suites: .*goal"):
        run(tasks="gaol")
    with pytest.raises(UnknownNameError, match="baseline condition 'unsteered'"):
        run(conditions=[Prompt()])
    with pytest.raises(ConfigError, match="unique"):
        run(conditions=["unsteered", "unsteered"])
    with pytest.raises(UnknownNameError, match="Did you mean 'unsteered'"):
        run(conditions=["unstered"])
    with pytest.raises(UnknownNameError, match="Valid backends: local, ray, serial"):
        run(backend="dask")
    with pytest.raises(UnknownNameError, match="Valid policys: <a MiniVLA checkpoint directory>, expert"):
        evaluate("no/such/checkpoint", ["LiftRedBlock"], seeds=1, out_dir=tmp_path, backend="serial")
    assert not list(tmp_path.iterdir())  # nothing was written


def test_suites_expand_to_their_tasks():
    import envs

    assert resolve_tasks("goal") == envs.list_tasks("goal")
    assert resolve_tasks(["LiftRedBlock", "goal"])[0] == "LiftRedBlock" and len(resolve_tasks("all")) == 15


def test_videos_for_the_first_seeds(tmp_path):
    import imageio.v2 as imageio

    evaluate(ExpertPolicy(), ["LiftRedBlock"], ["unsteered"], seeds=2, out_dir=tmp_path, backend="serial",
             frames="agentview", video_seeds=1, max_steps=5, env_kwargs={"image_size": 64}, progress=False)
    videos = sorted((tmp_path / "episodes").glob("*.mp4"))
    assert [v.name for v in videos] == ["LiftRedBlock__unsteered__1000000.mp4"]
    assert RunFolder(tmp_path).read("LiftRedBlock__unsteered__1000000")["video"] == videos[0].name
    frames = imageio.mimread(videos[0], memtest=False)
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3)


def test_the_sweep_command_takes_seeds_out_and_policy_over_the_yaml(tmp_path):
    from arrcoc_steer.cli import main

    config = tmp_path / "sweep.yaml"
    config.write_text(f"tasks: [LiftRedBlock]\nseeds: 50\nout_dir: {tmp_path / 'ignored'}\npolicy: no/such/dir\n"
                      "conditions: [{kind: unsteered}]\nprogress: false\n")  # fmt: skip
    out = tmp_path / "quick"
    assert main(["sweep", str(config), "--seeds", "2", "--out", str(out), "--policy", "expert", "--backend", "serial"]) == 0
    assert len(episode_files(out)) == 2 and not (tmp_path / "ignored").exists()


def test_the_eval_command_runs_development_seeds_apart_from_the_reporting_ones(tmp_path):
    from arrcoc_steer.cli import main

    out = tmp_path / "dev"
    assert main(["eval", "--policy", "expert", "--tasks", "LiftRedBlock", "--seeds", "2", "--seed-base", "7000000",
                 "--out", str(out), "--backend", "serial", "--max-steps", "3"]) == 0  # fmt: skip
    assert sorted(json.loads(doc)["seed"] for doc in episode_files(out).values()) == [7_000_000, 7_000_001]


def test_the_eval_command_pairs_with_unsteered_else_the_first_condition_else_the_one_named(tmp_path):
    from arrcoc_steer.cli import main

    base = ["eval", "--policy", "expert", "--tasks", "LiftRedBlock", "--seeds", "1", "--backend", "serial",
            "--max-steps", "2"]  # fmt: skip
    prompts = ["--condition", "prompt", "modifier=quickly", "--condition", "prompt", "modifier=slowly"]
    for extra, baseline in [([], "unsteered"), (prompts, "prompt_quickly"),
                            (prompts + ["--baseline", "prompt_slowly"], "prompt_slowly")]:  # fmt: skip
        out = tmp_path / baseline
        assert main([*base, *extra, "--out", str(out)]) == 0
        assert json.loads((out / "sweep.json").read_text())["baseline"] == baseline
