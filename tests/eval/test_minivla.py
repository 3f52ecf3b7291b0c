"""Plumbing with the default policy (an untrained MiniVLA): every steering and budget condition runs
through a sweep, fires its interventions, and records what it did. One step each."""

from __future__ import annotations

import numpy as np
import pytest

from arrcoc_steer.control import ControllerConfig
from arrcoc_steer.eval import (Budget, ClosedLoop, Concept, RandomControl, RandomDirection, Residual, RunFolder,
                               evaluate)


@pytest.fixture(scope="module")
def policy():
    from arrcoc_steer.models.minivla import MiniVLA

    return MiniVLA().eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, concepts_file):
    import torch

    from arrcoc_steer.concepts import ModelRef
    from arrcoc_steer.steering import Calibration, ResidualDirection

    root = tmp_path_factory.mktemp("steer")
    direction = torch.randn(384, generator=torch.Generator().manual_seed(0))
    ResidualDirection({3: direction}, name="quick").save(root / "quick.safetensors")
    Calibration(torch.full((6, 1536), 0.4), 0.99, "all", 100, ModelRef("bert", 6, 1536)).save(root / "cal.safetensors")
    return {"concepts": concepts_file, "direction": str(root / "quick.safetensors"),
            "calibration": str(root / "cal.safetensors")}


def test_every_condition_runs_on_minivla(policy, files, tmp_path):
    fast = Concept(concepts=files["concepts"], concept="fast", alpha=2.0, unit="calibrated",
                   calibration=files["calibration"])
    residual = Residual(direction=files["direction"], strength=4.0, positions="image")
    conditions = [
        "unsteered", fast, RandomControl(**fast.steer_fields(), seed=1),
        Concept(concepts=files["concepts"], concept="fast/1", alpha=8.0, positions="action", layers=[3]),
        residual,
        ClosedLoop(steer=residual, reference=0.1, controller=ControllerConfig(alpha_max=4.0)),
        *[Budget(budget=64, allocator=a) for a in ("relevance", "uniform", "random", "downsample")],
        Budget(budget=64, phase_aware=False),
        RandomDirection(**residual.steer_fields(), seed=2),
    ]  # fmt: skip
    r = evaluate(policy, ["LiftRedBlock"], conditions, seeds=1, out_dir=tmp_path, backend="serial", max_steps=1,
                 progress=False)
    assert [x["status"] for x in r.rows] == ["ok"] * len(conditions), [x["error"] for x in r.rows]
    folder, key = RunFolder(tmp_path), lambda c: f"LiftRedBlock__{c}__{r.rows[0]['seed']}"
    for c in conditions[1:6]:
        counts = folder.read(key(c.name))["notes"]["steer_counts"]
        assert counts and all(n > 0 for n in counts.values()), (c.name, counts)
    loop = folder.load_record(key(conditions[5].name))
    assert loop.traces["alpha"].shape == (1,) and loop.notes["reference"] == 0.1
    for c in conditions[6:-1]:
        traces = folder.load_record(key(c.name)).traces
        assert traces["allocation"].shape == (1, 2, 16) and (traces["allocation"].sum(axis=(1, 2)) == 64).all()
        assert ("carrying" in traces) == (c.allocator == "relevance")  # the phase relevance read, per step
    assert conditions[-2].name == "budget_relevance_static_64"
    assert r.controls[fast.name]["speed_w"]["n_controls"] == 1  # a percentile needs >= 20 of them:
    assert not r.controls[fast.name]["speed_w"]["sufficient"]
    assert r.controls[residual.name]["controls"] == [conditions[-1].name]  # a random direction of matched norm
    table = r.markdown(["speed_w"]).splitlines()  # controls fold into one row under their steer
    assert table[0].startswith("| condition | speed_w vs baseline (p, d) | success |")
    row = next(i for i, line in enumerate(table) if line.startswith(f"| {residual.name} |"))
    assert "pct of 1" in table[row] and table[row + 1].startswith("| 1 matched random controls | median ")
    assert not any(line.startswith(f"| {conditions[-1].name} ") for line in table)
    random_dir = folder.load_record(key(conditions[-1].name))
    assert folder.read(key(conditions[-1].name))["notes"]["steer_counts"] and not np.array_equal(
        random_dir.actions, folder.load_record(key(residual.name)).actions)
    assert conditions[5].name in r.closed_loop  # compared with the fixed steers of the sweep
    plain, steered = folder.load_record(key("unsteered")), folder.load_record(key(residual.name))
    assert not np.array_equal(plain.actions, steered.actions)  # a strong direction changes the actions
    # the model is left unsteered after the sweep
    assert not policy._forward_pre_hooks and not any(m._forward_hooks or m._forward_pre_hooks for m in policy.modules())


@pytest.mark.parametrize("condition, match", [
    (Budget(budget=64), "passes allocation= to predict_action"),
    (Residual(direction=__file__), "is not a torch.nn.Module"),
    (ClosedLoop(reference=0.1), "must have set_strength"),
])  # fmt: skip
def test_conditions_the_policy_cannot_run_are_refused_before_the_sweep(tmp_path, condition, match):
    from arrcoc_steer.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        evaluate(lambda obs, instruction: np.zeros(7), ["LiftRedBlock"], ["unsteered", condition], seeds=1,
                 out_dir=tmp_path, backend="serial", progress=False)
    assert not list(tmp_path.iterdir())
