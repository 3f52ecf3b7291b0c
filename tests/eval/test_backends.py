"""Backends: the same seeds give the same records in-process, in a process pool and on Ray."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError, MissingDependencyError, UnknownNameError
from arrcoc_steer.eval import ExpertPolicy, Prompt, RunFolder, evaluate, make_backend

from .conftest import FAST_TASKS
from .helpers import FlakyExpert

CONDITIONS = ["unsteered", Prompt(modifier="quickly")]
VOLATILE = ("wall_s",)


def snapshot(out) -> dict[str, tuple[dict, dict]]:
    """Every episode's JSON (minus timings) and arrays, keyed by episode."""
    from safetensors.numpy import load_file

    folder, out_ = RunFolder(out), {}
    for path in sorted(folder.episodes.glob("*.json")):
        doc = {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
        out_[path.stem] = (doc, load_file(folder.path(path.stem, ".safetensors")))
    return out_


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key][0] == b[key][0], key
        assert a[key][1].keys() == b[key][1].keys()
        assert all(np.array_equal(a[key][1][k], b[key][1][k]) for k in a[key][1]), key


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    evaluate(ExpertPolicy(), FAST_TASKS, CONDITIONS, seeds=2, out_dir=out, backend="serial", progress=False)
    return snapshot(out)


def test_a_process_pool_gives_the_same_records(tmp_path, serial_run):
    r = evaluate(ExpertPolicy(), FAST_TASKS, CONDITIONS, seeds=2, out_dir=tmp_path, backend="local", workers=2,
                 progress=False)
    assert r.timing["workers"] == 2 and r.timing["episodes_per_minute"] > 0
    assert_same(serial_run, snapshot(tmp_path))


def test_a_dead_worker_is_replaced_and_its_episode_retried(tmp_path):
    seeds = [1_000_000, 1_000_001, 1_000_002]
    r = evaluate(FlakyExpert(str(tmp_path), die=(1_000_001,)), ["LiftRedBlock"], ["unsteered"], seeds=seeds,
                 out_dir=tmp_path / "run", backend="local", workers=2, progress=False)
    assert r.crashed == [] and all(x["status"] == "ok" for x in r.rows)
    died = RunFolder(tmp_path / "run").read("LiftRedBlock__unsteered__1000001")
    assert died["attempts"] >= 2 and any("worker process died" in e for e in died["errors"])


def test_a_lambda_runs_in_process_but_cannot_travel_to_workers(tmp_path):
    policy = lambda obs, instruction: np.zeros(7)
    r = evaluate(policy, ["LiftRedBlock"], seeds=1, out_dir=tmp_path / "a", workers=1, max_steps=3, progress=False)
    assert r.rows[0]["status"] == "ok" and r.rows[0]["length"] == 3
    with pytest.raises(ConfigError, match="cannot be pickled.*workers=1"):
        evaluate(policy, ["LiftRedBlock"], seeds=1, out_dir=tmp_path / "b", workers=2, progress=False)


def test_backend_choice_is_validated():
    with pytest.raises(UnknownNameError, match="Did you mean 'local'"):
        make_backend("lokal", ExpertPolicy())
    with pytest.raises(ConfigError, match="address= joins a Ray cluster"):
        make_backend("local", ExpertPolicy(), address="auto")


def test_ray_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'arrcoc-steer\[ray\]'"):
        make_backend("ray", ExpertPolicy())


def test_ray_gives_the_same_records(tmp_path, serial_run):
    ray = pytest.importorskip("ray")
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo, "MUJOCO_GL": "egl"}})
    try:
        r = evaluate(ExpertPolicy(), FAST_TASKS, CONDITIONS, seeds=2, out_dir=tmp_path, backend="ray",
                     progress=False)
        assert r.timing["backend"] == "ray" and r.timing["workers"] == 2
    finally:
        ray.shutdown()
    assert_same(serial_run, snapshot(tmp_path))


def test_the_in_process_backend_runs_torch_on_the_asked_threads_and_restores_them(tmp_path):
    import torch

    seen = []

    def policy(obs, instruction):
        seen.append(torch.get_num_threads())
        return np.zeros(7)

    caller = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate(policy, ["LiftRedBlock"], seeds=1, out_dir=tmp_path, workers=1, max_steps=2, progress=False)
        assert seen and set(seen) == {1}  # like each pool or Ray worker, so records compare equal
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(caller)
