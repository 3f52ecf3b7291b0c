"""The action readout: the Jacobian of a policy's action logits at a layer's FFN output, and the
concepts found through it."""

import pytest
import torch

from arrcoc_steer.concepts import (ACTION_MEANINGS, ActionMeaning, ModelRef, find_action_concept, load_concepts,
                                   save_concepts)  # fmt: skip
from arrcoc_steer.errors import CheckpointError, ConfigError, SteeringError, UnknownNameError
from arrcoc_steer.models.adapters import Adapter
from arrcoc_steer.models.minivla import MiniVLA
from arrcoc_steer.policy_steering import write_action_concepts
from arrcoc_steer.readout import ActionReadout
from arrcoc_steer.steering import Intervention, ResidualDirection, Steerer


def logits(model, item):
    return model.action_logits(item["obs"], item["instruction"], budget=64)


@pytest.fixture(scope="module")
def readout(policy, items):
    return ActionReadout.fit(policy, items, logits)


def attached(model) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_neurons_profile_predicts_what_adding_it_does_to_the_logits(policy, items, readout):
    """Adding eps to a neuron at the action queries moves the logits by eps x its action profile."""
    last = Adapter(policy).spec.n_layers - 1
    assert readout.layers == (last,) and readout.n_states == len(items)
    assert readout.jacobians[last].shape == (7, policy.config.n_bins, Adapter(policy).spec.d_model)
    item, eps = items[0], 0.05
    profiles = ActionReadout.fit(policy, [item], logits).profiles(policy, last)  # (d_ff, 7, n_bins)
    with torch.no_grad():
        plain = logits(policy, item)[0]
        for neuron in (3, 700):
            with Steerer(policy, [Intervention([(last, neuron)], "add", eps, "raw", "action")]):
                change = logits(policy, item)[0] - plain
            assert change.abs().max() > 1e-4  # the push does something
            assert torch.allclose(change, eps * profiles[neuron], atol=0.05 * change.abs().max().item())
    assert not attached(policy)


def test_a_neuron_built_to_mean_fast_is_found_first_and_not_as_slow(items, readout):
    """Plant two value vectors whose profiles through the head are "bins far from zero" on dx, dy,
    dz: one that leaves the other queries alone, and one that also pushes the gripper query."""
    model = MiniVLA().eval()
    adapter = Adapter(model)
    last, clean, dirty = readout.layers[0], 123, 456
    jac = readout.jacobians[last]  # (7, n_bins, d)
    centred = (jac - jac.mean(1, keepdim=True)).reshape(-1, jac.shape[-1])

    def plant(neuron, gripper):
        target = torch.zeros(7, len(readout.values))
        target[:3] = readout.values.abs()
        target[6] = gripper * readout.values
        target = (target - target.mean(-1, keepdim=True)).reshape(-1, 1)
        value = torch.linalg.lstsq(centred, target).solution[:, 0]
        with torch.no_grad():
            adapter.module(f"layers.{last}.mlp.post").weight[:, neuron] = value

    plant(clean, 0.0)
    plant(dirty, 1.0)
    fast = find_action_concept(readout, "fast", model, top_n=5)
    slow = find_action_concept(readout, "slow", model, top_n=5)
    assert fast.neurons[0] == (last, clean) and fast.scores[0] > 0.5
    assert (last, dirty) not in fast.neurons[:1] and (last, clean) not in slow.neurons
    ranked = find_action_concept(readout, "fast", model, top_n=2000)
    score = dict(zip(ranked.neurons, ranked.scores))
    assert score[last, dirty] < score[last, clean] - 0.2  # the gripper push costs it
    assert fast.keywords == ("fast",) and "|value| at action dims [0, 1, 2]" in fast.meaning
    assert len(fast) == 5 and all(l == last for l, _ in fast.neurons)
    assert list(fast.scores) == sorted(fast.scores, reverse=True)


def test_readout_and_action_concepts_round_trip(policy, readout, tmp_path):
    again = ActionReadout.load(readout.save(tmp_path / "r.safetensors"))
    assert again.layers == readout.layers and again.n_states == readout.n_states and again.model == readout.model
    assert torch.equal(again.jacobians[again.layers[0]], readout.jacobians[readout.layers[0]])
    assert torch.equal(again.values, readout.values)
    up = find_action_concept(readout, "up", policy, top_n=4)
    [loaded] = load_concepts(save_concepts(tmp_path / "c.yaml", [up])).values()
    assert loaded.neurons == up.neurons and loaded.meaning == up.meaning and loaded.meaning
    ResidualDirection({0: torch.ones(Adapter(policy).spec.d_model)}).save(tmp_path / "d.safetensors")
    with pytest.raises(CheckpointError, match="not an action readout"):
        ActionReadout.load(tmp_path / "d.safetensors")


def test_bad_action_concepts_and_readouts_are_refused(policy, items, readout):
    with pytest.raises(UnknownNameError, match="Did you mean 'fast'"):
        find_action_concept(readout, "fats", policy)
    with pytest.raises(ConfigError, match="7 action dims"):
        find_action_concept(readout, ActionMeaning("value", (7,)), policy)
    with pytest.raises(SteeringError, match="measured at layers"):
        find_action_concept(readout, "up", policy, layers=[0])
    with pytest.raises(ConfigError, match="'magnitude' or 'value'"):
        ActionMeaning("speed", (0,))
    with pytest.raises(ConfigError, match="sign"):
        ActionMeaning("value", (0,), sign=2)
    with pytest.raises(ConfigError, match="bins, d_model"):
        ActionReadout({5: torch.zeros(7, 10, 4)}, torch.zeros(256))
    with pytest.raises(ConfigError, match="NaN or inf"):
        ActionReadout({5: torch.full((7, 3, 4), float("nan"))}, torch.zeros(3))
    other = ActionReadout(dict(readout.jacobians), readout.values, model=ModelRef("other", 4, 64))
    with pytest.raises(SteeringError, match="find the concept again"):
        other.profiles(policy, readout.layers[0])

    def broken(model, item):  # a logits function that fails half-way: nothing stays attached
        logits(model, item)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ActionReadout.fit(policy, items, broken)
    assert not attached(policy)
    with pytest.raises(ConfigError, match="at least one input"):
        ActionReadout.fit(policy, [], logits)
    with pytest.raises(ConfigError, match=r"\(1, p, n_bins\)"):
        ActionReadout.fit(policy, items[:1], lambda m, it: logits(m, it).flatten())
    assert not attached(policy)


def test_write_action_concepts_fits_once_and_reuses_the_readout(policy, items, tmp_path):
    path = tmp_path / "readout.safetensors"
    first = write_action_concepts(policy, tmp_path / "a.yaml", ("fast", "down"), items=items, readout=path, top_n=3)
    assert path.exists() and [c.name for c in first] == ["fast", "down"]
    again = write_action_concepts(policy, tmp_path / "b.yaml", ("fast", "down"), items=[{"broken": True}], readout=path,
                                  top_n=3)  # fmt: skip
    assert [c.neurons for c in again] == [c.neurons for c in first]
    assert set(load_concepts(tmp_path / "b.yaml")) == {"fast", "down"}


def test_the_concepts_command_finds_action_concepts(policy, readout, tmp_path, capsys):
    from arrcoc_steer.cli import main

    policy.save_pretrained(tmp_path / "policy")
    path = readout.save(tmp_path / "readout.safetensors")
    base = ["concepts", "--action", "--policy", str(tmp_path / "policy"), "--readout", str(path)]
    assert main([*base, "fast", "up", "--top-n", "4", "--out", str(tmp_path / "c.yaml")]) == 0
    found = load_concepts(tmp_path / "c.yaml")
    assert list(found) == ["fast", "up"] and all(len(c) == 4 for c in found.values())
    assert "+value at action dims [2]" in capsys.readouterr().out
    assert main([*base[:-2], "--readout", str(tmp_path / "none.safetensors"), "quick"]) == 2  # checked before fitting
    assert "Unknown action meaning 'quick'" in capsys.readouterr().err
    assert not (tmp_path / "none.safetensors").exists()


def test_the_readout_works_on_any_adapted_model():
    """An OpenVLA-layout stand-in (Llama, action bins at the end of the vocabulary), teacher-forced:
    the logits that predict the 7 action tokens (16 of their bins, to keep it quick), read at every
    position of its last layer."""
    from arrcoc_steer.models.tiny import example_inputs, tiny_model

    model = tiny_model("openvla")
    inputs = example_inputs(model)
    actions = torch.arange(7)[None] * 30 + model.vocab_size - 256
    inputs["input_ids"] = torch.cat([inputs["input_ids"], actions], dim=1)

    def bins(m, item):
        return m(**item).logits[0, -8:-1, m.vocab_size - 16 : m.vocab_size]

    fitted = ActionReadout.fit(model, [inputs], bins, positions="all")
    last = fitted.layers[0]
    assert fitted.jacobians[last].shape == (7, 16, 64) and torch.equal(fitted.values, torch.linspace(-1, 1, 16))
    profiles = fitted.profiles(model, last)
    with torch.no_grad():
        plain = bins(model, inputs)
        with Steerer(model, [Intervention([(last, 5)], "add", 1e-3, "raw", "all")]):
            change = bins(model, inputs) - plain
    assert change.abs().max() > 0
    assert torch.allclose(change, 1e-3 * profiles[5], atol=0.05 * change.abs().max().item())
    assert not attached(model)
