import json
import os

import numpy as np
import pytest

import envs
from arrcoc_steer.errors import ConfigError, UnknownNameError
from envs.dataset import DemoDataset, collect, episode_seed, read_meta

TASKS = ["LiftRedBlock", "PushRedBlockToZone"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    collect(TASKS, 2, out, seed=3, image_size=32, progress=False)
    return out


def test_files_index_and_metadata(demo_dir):
    index = json.loads((demo_dir / "index.json").read_text())
    assert len(index["episodes"]) == 4 and index["failed"] == []
    for e in index["episodes"]:
        path = demo_dir / e["file"]
        meta = read_meta(path)
        assert meta["task"] in TASKS and meta["success"] is True
        assert meta["seed"] == episode_seed(3, meta["task"], meta["index"], meta["attempt"])
        assert set(meta["modifiers"]) == {"speed", "height", "care"}
        assert meta["length"] == e["length"] > 0
    assert index["total_steps"] == sum(e["length"] for e in index["episodes"])
    assert not list(demo_dir.glob("**/.tmp-*"))


def test_reader_loads_arrays_lazily(demo_dir):
    ds = DemoDataset(demo_dir)
    assert len(ds) == 4 and ds.tasks == sorted(TASKS)
    ep = ds[0]
    T = len(ep)
    assert ep["agentview"].shape == (T, 32, 32, 3) and ep["agentview"].dtype == np.uint8
    assert ep["wrist"].shape == (T, 32, 32, 3)
    assert ep["state"].shape == (T, 9) and ep["state"].dtype == np.float32
    assert ep["action"].shape == (T, 7) and ep["action"].dtype == np.float32
    with pytest.raises(KeyError):
        ep["depth"]
    frames = list(ds.frames())
    assert len(frames) == sum(len(e) for e in ds)
    f = frames[0]
    assert f["t"] == 0 and f["episode"] == 0 and f["instruction"] == ep.meta["instruction"]
    np.testing.assert_array_equal(f["action"], ep["action"][0])
    assert len(DemoDataset(demo_dir, tasks=["LiftRedBlock"])) == 2


def test_replaying_recorded_actions_reproduces_the_episode(demo_dir):
    import envs

    ep = DemoDataset(demo_dir, tasks=["LiftRedBlock"])[0]
    env = envs.make("LiftRedBlock", image_size=32)
    try:
        obs, _ = env.reset(seed=ep.meta["seed"], options={"modifiers": ep.meta["modifiers"]})
        assert obs["instruction"] == ep.meta["instruction"]
        states, actions, frames = ep["state"], ep["action"], ep["agentview"]
        for t in range(len(ep)):
            np.testing.assert_array_equal(obs["state"], states[t])
            np.testing.assert_array_equal(obs["agentview"], frames[t])
            obs, _, term, trunc, info = env.step(actions[t])
        assert term and info["success"]
    finally:
        env.close()


def test_collect_is_deterministic_and_resumable(demo_dir, tmp_path):
    # a second run into the same folder skips finished episodes
    first = {p: p.stat().st_mtime_ns for p in demo_dir.glob("*/*.safetensors")}
    collect(TASKS, 2, demo_dir, seed=3, image_size=32, progress=False)
    assert {p: p.stat().st_mtime_ns for p in demo_dir.glob("*/*.safetensors")} == first
    # an interrupted run (a stale temp file, one episode missing) completes to identical bytes
    victim = demo_dir / "LiftRedBlock" / "episode_00001.safetensors"
    copy = tmp_path / "demos"
    copy.mkdir()
    for p in demo_dir.glob("*/*.safetensors"):
        (copy / p.parent.name).mkdir(exist_ok=True)
        if p != victim:
            (copy / p.parent.name / p.name).write_bytes(p.read_bytes())
    (copy / "LiftRedBlock" / ".tmp-123-episode_00001.safetensors").write_bytes(b"partial")
    collect(TASKS, 2, copy, seed=3, image_size=32, progress=False)
    assert (copy / "LiftRedBlock" / "episode_00001.safetensors").read_bytes() == victim.read_bytes()
    assert not list(copy.glob("**/.tmp-*"))


def test_parallel_collection_writes_the_same_files_and_keeps_other_tasks_failures(demo_dir, tmp_path):
    out = tmp_path / "parallel"
    out.mkdir()
    earlier = {"task": "PutRedBlockOnPlate", "index": 0, "failed_seeds": [7]}  # from another run into this folder
    (out / "index.json").write_text(json.dumps({"failed": [earlier]}))
    index = collect(TASKS, 2, out, seed=3, image_size=32, progress=False, workers=2)
    serial = sorted(p.relative_to(demo_dir) for p in demo_dir.glob("*/*.safetensors"))
    assert sorted(p.relative_to(out) for p in out.glob("*/*.safetensors")) == serial
    for rel in serial:
        assert (out / rel).read_bytes() == (demo_dir / rel).read_bytes()
    assert len(index["episodes"]) == len(serial) and index["failed"] == [earlier]


def test_failures_are_retried_and_recorded(tmp_path, monkeypatch):
    import envs.dataset as dataset

    real = dataset._record_episode
    calls = []

    def flaky(env, seed, *args):
        arrays, meta = real(env, seed, *args)
        calls.append(seed)
        if len(calls) == 1:
            meta["success"] = False  # pretend the first attempt failed
        return arrays, meta

    monkeypatch.setattr(dataset, "_record_episode", flaky)
    index = collect(["LiftRedBlock"], 1, tmp_path, seed=0, image_size=16, progress=False, modifiers="none")
    meta = index["episodes"][0]
    assert meta["attempt"] == 1 and meta["failed_seeds"] == [calls[0]] and meta["seed"] == calls[1]
    assert meta["modifiers"] == {"speed": "normal", "height": "normal", "care": False}


def test_dart_noise_moves_the_states_but_records_the_experts_clean_actions(tmp_path):
    import envs
    from envs.expert import SPEED_SCALE

    index = collect(["LiftRedBlock"], 1, tmp_path, seed=0, image_size=16, progress=False, modifiers="none", noise=0.2)
    assert index["config"]["noise"] == 0.2
    ep = DemoDataset(tmp_path)[0]
    assert ep.meta["noise"] == 0.2 and ep.meta["success"]
    # the expert never commands more than its speed; noisy commands would (norm 0.6 + N(0, 0.2^2) per axis)
    assert np.linalg.norm(ep["action"][:, :3], axis=1).max() <= SPEED_SCALE["normal"] + 1e-5
    # replaying the recorded (clean) actions leaves the recorded (noisy) path: the env executed others
    env = envs.make("LiftRedBlock", image_size=16)
    try:
        obs, _ = env.reset(seed=ep.meta["seed"], options={"modifiers": ep.meta["modifiers"]})
        replayed = [obs["state"]]
        for a in ep["action"][:-1]:
            obs, *_ = env.step(a)
            replayed.append(obs["state"])
    finally:
        env.close()
    gap = np.abs(np.array(replayed)[:, :3] - ep["state"][:, :3]).max()
    assert gap > 0.005  # metres


def test_prefixes_record_the_experts_first_steps_without_an_outcome(demo_dir, tmp_path):
    from arrcoc_steer.data import FrameDataset

    index = collect(TASKS, 2, tmp_path, seed=3, image_size=32, progress=False, max_steps=3)
    assert index["config"]["max_steps"] == 3 and index["failed"] == []
    whole = {(e.meta["task"], e.meta["index"]): e for e in DemoDataset(demo_dir)}
    prefixes = DemoDataset(tmp_path)  # success None: kept, unlike a failed episode
    assert len(prefixes) == 4
    for ep in prefixes:
        assert len(ep) == 3 and ep.meta["success"] is None and ep.meta["max_steps"] == 3
        full = whole[ep.meta["task"], ep.meta["index"]]  # same seeds: the same first steps
        for key in ("agentview", "wrist", "state", "action"):
            np.testing.assert_array_equal(ep[key], full[key][:3])
    assert len(FrameDataset([tmp_path])) == 12


def test_a_later_step_is_recorded_from_where_the_earlier_subgoals_are_done(tmp_path):
    import envs

    task = "PutBothBlocksInTray"  # red into the tray, then blue
    kw = dict(seed=5, image_size=32, progress=False, modifiers="none")
    collect([task], 1, tmp_path / "whole", **kw)
    index = collect([task], 1, tmp_path / "later", max_steps=4, from_subgoal=1, **kw)
    assert index["config"]["from_subgoal"] == 1
    whole, later = DemoDataset(tmp_path / "whole")[0], DemoDataset(tmp_path / "later")[0]
    assert later.meta["from_subgoal"] == 1 and len(later) == 4 and later.meta["success"] is None
    start = int(np.flatnonzero((whole["state"] == later["state"][0]).all(1))[0])  # the same seed, the same run
    for key in ("agentview", "wrist", "state", "action"):
        np.testing.assert_array_equal(later[key], whole[key][start : start + 4])
    # the recording starts at the first step whose scene has the red block in the tray
    env = envs.make(task, image_size=32)
    try:
        obs, _ = env.reset(seed=whole.meta["seed"], options={"modifiers": whole.meta["modifiers"]})
        done = [env.unwrapped.subgoals_done()[0]]
        for a in whole["action"][:start]:
            env.step(a)
            done.append(env.unwrapped.subgoals_done()[0])
    finally:
        env.close()
    assert done[-1] and not any(done[:-1])


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="modifiers"):
        collect(["LiftRedBlock"], 1, tmp_path, modifiers="some")
    with pytest.raises(UnknownNameError):
        collect(["LiftBlock"], 1, tmp_path)
    with pytest.raises(ConfigError, match="noise"):
        collect(["LiftRedBlock"], 1, tmp_path, noise=-0.1)
    with pytest.raises(ConfigError, match="workers"):
        collect(["LiftRedBlock"], 1, tmp_path, workers=0)
    with pytest.raises(ConfigError, match="max_steps"):
        collect(["LiftRedBlock"], 1, tmp_path, max_steps=0)
    with pytest.raises(ConfigError, match="from_subgoal"):
        collect(["LiftRedBlock"], 1, tmp_path, from_subgoal=-1)
    with pytest.raises(ConfigError, match=r"more subgoals.*LiftRedBlock"):
        collect(["PutBothBlocksInTray", "LiftRedBlock"], 1, tmp_path, from_subgoal=1)
    with pytest.raises(ConfigError, match="does not exist"):
        DemoDataset(tmp_path / "missing")
    assert not os.listdir(tmp_path)  # nothing written before validation


def test_episode_files_map_once_each_and_read_back_exactly(demo_dir):
    from safetensors.numpy import load_file

    from arrcoc_steer.data import map_safetensors

    path = next(demo_dir.glob("*/episode_*.safetensors"))
    arrays, meta = map_safetensors(path)
    expected = load_file(path)
    assert set(arrays) == set(expected) and "episode" in meta
    for name, value in expected.items():
        assert arrays[name].dtype == value.dtype
        np.testing.assert_array_equal(arrays[name], value)
    bases = {id(_root(a)) for a in arrays.values()}
    assert len(bases) == 1  # one map (one file descriptor) per file, however many tensors


def _root(a: np.ndarray) -> np.ndarray:
    while a.base is not None and isinstance(a.base, np.ndarray):
        a = a.base
    return a


def test_takeover_records_the_expert_from_where_the_policy_left_the_scene(tmp_path):
    from envs.dataset import _driver

    task = "LiftRedBlock"
    index = collect([task], 1, tmp_path, seed=3, progress=False, modifiers="none", takeover="default")
    assert index["config"]["takeover"] == "default"
    ep = DemoDataset(tmp_path)[0]
    k = ep.meta["takeover_step"]
    assert k >= 1 and ep.meta["success"]
    env = envs.make(task)
    try:  # replay: the shipped policy drives k steps from the same seed, on one thread as collect runs it
        obs, _ = env.reset(seed=ep.meta["seed"], options={"modifiers": ep.meta["modifiers"]})
        with _driver("default") as policy:
            policy.reset()
            for _ in range(k):
                obs, *_ = env.step(policy.predict_action(obs, obs["instruction"]))
    finally:
        env.close()
    np.testing.assert_array_equal(ep["state"][0], obs["state"])  # the file starts where the policy stopped
    np.testing.assert_array_equal(ep["agentview"][0], obs["agentview"])
    with pytest.raises(ConfigError, match="takeover"):
        collect([task], 1, tmp_path / "bad", takeover=str(tmp_path / "no_model"))
    assert not (tmp_path / "bad").exists()
