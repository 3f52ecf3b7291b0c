import pytest
import torch

from arrcoc_steer.cli import parse_concept_spec
from arrcoc_steer.errors import ConfigError
from arrcoc_steer.policy_steering import with_modifier, write_calibration, write_concepts, write_direction, write_map
from arrcoc_steer.steering import Calibration, ResidualDirection


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


def test_a_map_per_action_query_runs_as_an_eval_condition(policy, items, tmp_path):
    from arrcoc_steer.errors import SteeringError
    from arrcoc_steer.eval.conditions import RandomDirection, Residual, Resources
    from arrcoc_steer.steering import ResidualMap, Steerer

    path = write_map(policy, tmp_path / "m.safetensors", "quickly", layers=[5], items=items)
    fitted = ResidualMap.load(path)
    assert fitted.positions == "action" and fitted.maps[5][0].shape == (7, 384, 384) and fitted.name == "quickly"
    obs = items[0]["obs"]
    with torch.no_grad():  # logits, not decoded actions: an untrained head's decoded bins may not move
        plain = policy.observe(obs, items[0]["instruction"])[0].action_logits
        with Steerer(policy, fitted) as s:
            steered = policy.observe(obs, items[0]["instruction"])[0].action_logits
    assert s.counts == {"quickly": 7} and not torch.allclose(plain, steered)  # one edit per action query
    condition = Residual(direction=str(path), strength=0.5, positions="action")
    [made] = condition.interventions(policy, Resources())
    assert isinstance(made, ResidualMap) and made.strength == 0.5
    [control] = RandomDirection(**condition.steer_fields(), seed=0).interventions(policy, Resources())
    assert control.maps[5][0].shape == (7, 384, 384) and not torch.equal(control.maps[5][0], fitted.maps[5][0])
    with pytest.raises(ConfigError, match="fitted on 'action' positions; set positions='action'"):
        Residual(direction=str(path)).interventions(policy, Resources())
    with pytest.raises(ConfigError, match=r"the map has no layer in \(2,\)"):
        Residual(direction=str(path), positions="action", layers=[2]).interventions(policy, Resources())
    on_text = ResidualMap({5: fitted.maps[5]}, positions="text")  # 7 matrices, but not 7 text tokens
    with pytest.raises(SteeringError, match="one matrix for each of 7 'text' positions"):
        with Steerer(policy, on_text):
            policy.predict_action(obs, "pick up the red block and put it in the tray")
    assert not any(m._forward_hooks for m in policy.modules())  # nothing left attached
    with pytest.raises(ConfigError, match="differ"):
        write_map(policy, tmp_path / "n.safetensors", "quickly", "quickly", layers=[5], items=items)


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


def test_the_direction_command_writes_directions_and_maps(policy, tmp_path, capsys):
    from arrcoc_steer.cli import main
    from arrcoc_steer.steering import ResidualMap

    policy.save_pretrained(tmp_path / "policy")
    base = ["direction", "quickly", "slowly", "--policy", str(tmp_path / "policy"), "--per-task", "1", "--positions", "action"]
    assert main([*base, "--raw", "--top-layers", "2", "--out", str(tmp_path / "d.safetensors")]) == 0
    assert len(ResidualDirection.load(tmp_path / "d.safetensors").layers) == 2 and "layer: norm" in capsys.readouterr().out
    assert main([*base, "--map", "--out", str(tmp_path / "m.safetensors")]) == 0
    fitted = ResidualMap.load(tmp_path / "m.safetensors")
    assert len(fitted.layers) == 1 and fitted.maps[fitted.layers[0]][0].shape == (7, 384, 384)
    assert f"a map at layers [{fitted.layers[0]}], action positions" in capsys.readouterr().out


def test_the_demo_fits_its_map_where_the_word_reaches_the_actions(policy, tmp_path):
    from arrcoc_steer.demo import DemoConfig, demo_conditions, prepare_map
    from arrcoc_steer.eval import condition_from_dict
    from arrcoc_steer.steering import ResidualMap

    cfg = DemoConfig(out=str(tmp_path), tasks=("LiftRedBlock",))
    path = prepare_map(cfg, policy, tmp_path)
    reach = ResidualDirection.load(tmp_path / "direction.safetensors").layers
    assert ResidualMap.load(path).layers == reach and len(reach) == 1
    conditions = [condition_from_dict(c) for c in demo_conditions(cfg, tmp_path, tmp_path / "cal", path)]
    names = [c.name for c in conditions]
    assert "residual_map_quickly_1_action" in names and "action_fast_clamp1cal" in names
    [action] = [c for c in conditions if c.name == "action_slow_clamp1cal"]
    assert action.concepts == str(tmp_path / "concepts_action.yaml") and action.positions == "action"
