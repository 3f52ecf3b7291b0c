import pytest
import torch

from arrcoc_steer.cli import parse_concept_spec
from arrcoc_steer.errors import ConfigError
from arrcoc_steer.models.minivla import MiniVLA
from arrcoc_steer.policy_steering import (observations, with_modifier, write_calibration, write_concepts,
                                         write_direction)
from arrcoc_steer.steering import Calibration, ResidualDirection


@pytest.fixture(scope="module")
def policy():
    return MiniVLA().eval()


@pytest.fixture(scope="module")
def items():
    return observations(("LiftRedBlock",), per_task=2, every=2)


def test_observations_come_from_expert_rollouts(items):
    assert len(items) == 2
    assert items[0]["obs"]["agentview"].shape == (128, 128, 3)
    assert items[0]["obs"]["state"][2] != items[1]["obs"]["state"][2]  # the hand moved between them


def test_calibration_scales_every_neuron_of_every_layer(policy, items, tmp_path):
    cal = Calibration.load(write_calibration(policy, tmp_path / "cal.safetensors", items))
    assert cal.scales.shape == (6, 1536)
    assert torch.all(cal.scales >= 0) and cal.scales.median() > 0


def test_contrast_direction_differs_only_by_the_modifier(policy, items, tmp_path):
    path = write_direction(policy, tmp_path / "d.safetensors", "quickly", "slowly", layers=[2, 4], items=items)
    d = ResidualDirection.load(path)
    assert sorted(d.vectors) == [2, 4]
    assert all(torch.isclose(v.norm(), torch.tensor(1.0), atol=1e-4) for v in d.vectors.values())
    raw = ResidualDirection.load(write_direction(policy, tmp_path / "r.safetensors", "quickly", "slowly",
                                                 items=items, positions="action", normalize=False))
    top = ResidualDirection.load(write_direction(policy, tmp_path / "t.safetensors", "quickly", "slowly",
                                                 items=items, positions="action", normalize=False, top_layers=2))
    norms = {l: float(v.norm()) for l, v in raw.vectors.items()}
    assert sorted(top.vectors) == sorted(sorted(norms, key=norms.get)[-2:])  # the two largest, kept raw
    assert all(torch.equal(top.vectors[l], raw.vectors[l]) for l in top.vectors)
    lift = ResidualDirection.load(write_direction(policy, tmp_path / "l.safetensors", "and lift it high", "",
                                                  items=items, layers=[5], normalize=False))
    assert lift.layers == (5,) and lift.vectors[5].norm() > 0  # one modifier against none
    assert with_modifier("put it in the tray.", "slowly") == "put it in the tray slowly"
    assert with_modifier("put it in the tray", "") == "put it in the tray"
    with pytest.raises(ConfigError, match="differ"):
        write_direction(policy, tmp_path / "e.safetensors", "quickly", "quickly", items=items)


def test_concepts_are_found_and_written(policy, tmp_path):
    from arrcoc_steer.concepts import load_concepts

    found = write_concepts(policy, tmp_path / "c.yaml", {"slow": (["slow", "slowly"], ["fast"])}, top_n=5)
    loaded = load_concepts(tmp_path / "c.yaml")
    assert found[0].name == "slow" and len(found[0].neurons) == 5
    assert list(loaded["slow"].neurons) == list(found[0].neurons)


def test_concept_spec_parsing():
    assert parse_concept_spec("fast=fast,quick/slow") == ("fast", ["fast", "quick"], ["slow"])
    assert parse_concept_spec("up=up") == ("up", ["up"], [])
    with pytest.raises(ConfigError, match="NAME=WORD"):
        parse_concept_spec("fast")
