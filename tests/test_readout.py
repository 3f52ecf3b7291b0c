"""The action readout: per state, the Jacobian of a policy's expected action at a layer's FFN output,
and the concepts found through it."""

import pytest
import torch

from arrcoc_steer.concepts import (ACTION_MEANINGS, ActionMeaning, ModelRef, PromptMeaning, find_action_concept,
                                   load_concepts, save_concepts)  # fmt: skip
from arrcoc_steer.errors import CheckpointError, ConfigError, SteeringError, UnknownNameError
from arrcoc_steer.models.adapters import Adapter
from arrcoc_steer.models.minivla import MiniVLA
from arrcoc_steer.policy_steering import observations, prompt_meaning, with_modifier, write_action_concepts
from arrcoc_steer.readout import ActionReadout, expected_actions
from arrcoc_steer.steering import Intervention, ResidualDirection, Steerer


def logits(model, item):
    return model.action_logits(item["obs"], item["instruction"], budget=64)


@pytest.fixture(scope="module")
def readout(policy, items):
    return ActionReadout.fit(policy, items, logits)


def attached(model) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def expected(model, item):
    """MiniVLA's expected action (the bins' values under the softmax) at one state."""
    return logits(model, item)[0].float().softmax(-1) @ torch.as_tensor(model.action_tokenizer.centers).float()


def test_a_neurons_effects_predict_what_adding_it_does_to_the_actions(policy, items, readout):
    """Adding eps to a neuron at the action queries moves each state's expected action by eps x its
    effects there."""
    adapter = Adapter(policy)
    last = adapter.spec.n_layers - 1
    assert readout.layers == (last,) and readout.n_states == len(items) and readout.n_positions == 7
    assert readout.jacobians[last].shape == (len(items), 7, adapter.spec.d_model)
    effects = readout.effects(policy, last)  # (d_ff, n_states, 7)
    assert effects.shape == (adapter.spec.d_ff, len(items), 7)
    eps = 0.05
    with torch.no_grad():
        for s, item in enumerate(items):
            plain = expected(policy, item)
            assert torch.allclose(readout.actions[s], plain, atol=1e-5)
            for neuron in (3, 700):
                with Steerer(policy, [Intervention([(last, neuron)], "add", eps, "raw", "action")]):
                    change = expected(policy, item) - plain
                assert change.abs().max() > 1e-5  # the push does something
                assert torch.allclose(change, eps * effects[neuron, s], atol=0.05 * change.abs().max().item())
    assert not attached(policy)


def test_neurons_built_to_mean_fast_and_up_are_found_first():
    """Plant value vectors whose effects are exactly a meaning's target in every state (through a
    random, well-conditioned readout of two states: dz rising in the first, falling in the second),
    then variants that also drift the gripper, or push dz in every state instead of only where the
    arm rises; both variants rank lower."""
    model = MiniVLA().eval()
    adapter = Adapter(model)
    last = adapter.spec.n_layers - 1
    actions = torch.tensor([[0.3, -0.2, 0.5, 0, 0, 0, 1.0], [-0.4, 0.1, -0.6, 0, 0, 0, 1.0]])
    jac = torch.randn(2, 7, adapter.spec.d_model, generator=torch.Generator().manual_seed(0)) / 20
    synthetic = ActionReadout({last: jac}, actions, torch.linspace(-1, 1, 256), model=ModelRef.of(adapter))
    jac = jac.reshape(-1, adapter.spec.d_model)

    def plant(neuron, effects):
        value = torch.linalg.lstsq(jac, effects.reshape(-1, 1)).solution[:, 0]
        with torch.no_grad():
            adapter.module(f"layers.{last}.mlp.post").weight[:, neuron] = value

    fast = torch.zeros_like(actions)
    fast[:, :3] = actions[:, :3]
    plant(11, fast)
    plant(22, fast + torch.tensor([0, 0, 0, 0, 0, 0, 0.5]))  # ... and a gripper drift
    rising = torch.zeros_like(actions)
    rising[0, 2] = 1.0
    plant(33, rising)
    plant(44, rising + torch.tensor([[0.0], [1.0]]) * torch.eye(7)[2])  # dz up in the falling state too

    def scores(meaning):
        ranked = find_action_concept(synthetic, meaning, model, top_n=3000)
        return ranked, dict(zip(ranked.neurons, ranked.scores))

    ranked, score = scores("fast")
    assert ranked.neurons[0] == (last, 11) and score[last, 11] > 0.99
    assert score[last, 22] < score[last, 11] - 0.1  # the gripper drift costs it
    assert (last, 11) not in find_action_concept(synthetic, "slow", model, top_n=50).neurons
    ranked, score = scores("up")
    assert ranked.neurons[0] == (last, 33) and score[last, 44] < score[last, 33] - 0.2
    assert ranked.keywords == ("up",) and "dims [2], where it is positive" in ranked.meaning
    assert list(ranked.scores) == sorted(ranked.scores, reverse=True) and all(l == last for l, _ in ranked.neurons)


def test_meanings_ask_for_the_states_own_action():
    actions = torch.tensor([[0.5, -0.5, 0.25, 0.1, 0, 0, 1], [0.1, 0.0, -0.5, 0, 0, 0, -1]])
    fast, slow, up, down = (ACTION_MEANINGS[w].target(actions) for w in ("fast", "slow", "up", "down"))
    assert torch.equal(fast[:, :3], actions[:, :3]) and not fast[:, 3:].any() and torch.equal(slow, -fast)
    assert up[:, 2].tolist() == [0.25, 0.0] and down[:, 2].tolist() == [0.0, -0.5] and not up[:, :2].any()
    assert ACTION_MEANINGS["open"].target(actions)[:, 6].tolist() == [-1.0, -1.0]


def test_readout_and_action_concepts_round_trip(policy, readout, tmp_path):
    again = ActionReadout.load(readout.save(tmp_path / "r.safetensors"))
    assert again.layers == readout.layers and again.n_states == readout.n_states and again.model == readout.model
    assert torch.equal(again.jacobians[again.layers[0]], readout.jacobians[readout.layers[0]])
    assert torch.equal(again.actions, readout.actions) and torch.equal(again.values, readout.values)
    fast = find_action_concept(readout, "fast", policy, top_n=4)
    [loaded] = load_concepts(save_concepts(tmp_path / "c.yaml", [fast])).values()
    assert loaded.neurons == fast.neurons and loaded.meaning == fast.meaning and loaded.meaning
    ResidualDirection({0: torch.ones(Adapter(policy).spec.d_model)}).save(tmp_path / "d.safetensors")
    with pytest.raises(CheckpointError, match="not an action readout"):
        ActionReadout.load(tmp_path / "d.safetensors")
    from safetensors.torch import save_file

    save_file({"layer.5.jacobian": torch.zeros(7, 3, 4), "values": torch.zeros(3)}, str(tmp_path / "old.safetensors"),
              {"kind": "action-readout"})  # fmt: skip
    with pytest.raises(CheckpointError, match="format 1.*fit it again"):
        ActionReadout.load(tmp_path / "old.safetensors")


def test_bad_action_concepts_and_readouts_are_refused(policy, items, readout):
    with pytest.raises(UnknownNameError, match="Did you mean 'fast'"):
        find_action_concept(readout, "fats", policy)
    with pytest.raises(ConfigError, match="7 action dims"):
        find_action_concept(readout, ActionMeaning("toward", (7,)), policy)
    with pytest.raises(SteeringError, match="measured at layers"):
        find_action_concept(readout, "fast", policy, layers=[0])
    still = ActionReadout(readout.jacobians, torch.zeros_like(readout.actions), readout.values, model=readout.model)
    with pytest.raises(ConfigError, match="no state of the readout asks for it"):
        find_action_concept(still, "up", policy)
    with pytest.raises(ConfigError, match="'along' or 'toward'"):
        ActionMeaning("speed", (0,))
    with pytest.raises(ConfigError, match="sign"):
        ActionMeaning("toward", (0,), sign=2)
    with pytest.raises(ConfigError, match="with kind 'along'"):
        ActionMeaning("toward", (2,), only="positive")
    with pytest.raises(ConfigError, match=r"\(2 states, 7 action dims, d_model\)"):
        ActionReadout({5: torch.zeros(7, 10, 4)}, torch.zeros(2, 7), torch.zeros(256))
    with pytest.raises(ConfigError, match="NaN or inf"):
        ActionReadout({5: torch.full((2, 7, 4), float("nan"))}, torch.zeros(2, 7), torch.zeros(3))
    other = ActionReadout(readout.jacobians, readout.actions, readout.values, model=ModelRef("other", 4, 64))
    with pytest.raises(SteeringError, match="find the concept again"):
        other.effects(policy, readout.layers[0])

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
    with pytest.raises(ConfigError, match="3 bin values for 256 logits"):
        ActionReadout.fit(policy, items[:1], logits, values=[-1, 0, 1])
    assert not attached(policy)


def test_write_action_concepts_fits_once_and_reuses_the_readout(policy, items, tmp_path):
    path = tmp_path / "readout.safetensors"
    first = write_action_concepts(policy, tmp_path / "a.yaml", ("fast", "open"), items=items, readout=path, top_n=3)
    assert path.exists() and [c.name for c in first] == ["fast", "open"]
    again = write_action_concepts(policy, tmp_path / "b.yaml", ("fast", "open"), items=[{"broken": True}], readout=path,
                                  top_n=3)  # fmt: skip
    assert [c.neurons for c in again] == [c.neurons for c in first]
    assert set(load_concepts(tmp_path / "b.yaml")) == {"fast", "open"}


def test_a_prompt_meaning_finds_the_neurons_that_do_what_the_modifier_does(policy, items, readout):
    """The changes a modifier makes are measured on the readout's own states (checked); a neuron whose
    effects are those changes ranks first, and one whose effects are their opposite is not kept."""
    plain = expected_actions(policy, items, logits)
    assert torch.allclose(plain, readout.actions, atol=1e-5)
    readout.check_states(plain)
    with pytest.raises(ConfigError, match="not the readout's"):
        readout.check_states(plain.flip(0))
    with pytest.raises(ConfigError, match="not the readout's"):
        readout.check_states(plain[:-1])
    shown = [{**it, "instruction": with_modifier(it["instruction"], "quickly")} for it in items]
    changes = expected_actions(policy, shown, logits) - plain
    assert changes.abs().max() > 0  # the modifier reaches the actions, even untrained
    quickly = PromptMeaning("quickly", changes)
    effects = readout.effects(policy, readout.layers[0])
    scores = (effects.flatten(1) @ changes.flatten()) / (effects.flatten(1).norm(dim=1) * changes.norm())
    found = find_action_concept(readout, quickly, policy, top_n=5, name="quickly_shown")
    assert [n for _, n in found.neurons] == scores.topk(5).indices.tolist()
    assert found.name == "quickly_shown" and "'quickly'" in found.meaning
    opposite = find_action_concept(readout, PromptMeaning("not quickly", -changes), policy, top_n=5)
    assert not set(found.neurons) & set(opposite.neurons)
    with pytest.raises(ConfigError, match="measure it on the readout's states"):
        find_action_concept(readout, PromptMeaning("quickly", changes[:-1]), policy)
    with pytest.raises(ConfigError, match="finite"):
        PromptMeaning("quickly", torch.full((2, 7), float("nan")))


def test_the_shipped_policy_means_by_slowly_and_quickly_what_the_rules_say():
    """Measured, not written in: on expert states of the trained policy, the change "slowly" makes to
    the actions points with the "slow" rule (a shorter move the way the arm goes), "quickly" with
    "fast"."""
    from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, load_policy

    trained = load_policy(DEFAULT_CHECKPOINT)
    states = observations(("PickRedBlockIntoTray",), per_task=8, every=3)
    plain = expected_actions(trained, states, logits)
    for modifier, word in (("slowly", "slow"), ("quickly", "fast")):
        shown = prompt_meaning(trained, states, modifier)
        assert shown.agreement(word, plain) > 0.5, modifier
        assert shown.agreement({"slow": "fast", "fast": "slow"}[word], plain) < -0.5
        assert torch.allclose(shown.target(plain) + plain, expected_actions(trained, [
            {**it, "instruction": with_modifier(it["instruction"], modifier)} for it in states], logits), atol=1e-5)


def test_write_action_concepts_finds_concepts_from_modifiers_on_the_readouts_states(policy, items, tmp_path):
    path = tmp_path / "readout.safetensors"
    found = write_action_concepts(policy, tmp_path / "a.yaml", ("fast",), items=items, readout=path, top_n=3,
                                  modifiers={"up_shown": "and lift it high"})  # fmt: skip
    assert [c.name for c in found] == ["fast", "up_shown"] and "'and lift it high'" in found[1].meaning
    assert set(load_concepts(tmp_path / "a.yaml")) == {"fast", "up_shown"}
    with pytest.raises(ConfigError, match="not the readout's"):  # a reused readout from other states
        write_action_concepts(policy, tmp_path / "b.yaml", ("fast",), items=items[::-1], readout=path,
                              modifiers={"up_shown": "and lift it high"})  # fmt: skip
    assert not (tmp_path / "b.yaml").exists()


def test_the_concepts_command_finds_action_concepts(policy, readout, tmp_path, capsys):
    from arrcoc_steer.cli import main

    policy.save_pretrained(tmp_path / "policy")
    path = readout.save(tmp_path / "readout.safetensors")
    base = ["concepts", "--action", "--policy", str(tmp_path / "policy"), "--readout", str(path)]
    assert main([*base, "fast", "close", "--top-n", "4", "--out", str(tmp_path / "c.yaml")]) == 0
    found = load_concepts(tmp_path / "c.yaml")
    assert list(found) == ["fast", "close"] and all(len(c) == 4 for c in found.values())
    assert "more of the action at dims [0, 1, 2]" in capsys.readouterr().out
    assert main([*base[:-2], "--readout", str(tmp_path / "none.safetensors"), "quick"]) == 2  # checked before fitting
    assert "Unknown action meaning 'quick'" in capsys.readouterr().err
    assert not (tmp_path / "none.safetensors").exists()
    lift = ["--modifier", "up_prompt=and lift it high", "--top-n", "3"]
    assert main([*base, *lift, "--out", str(tmp_path / "m.yaml")]) == 2  # the readout is of other states
    assert "not the readout's" in capsys.readouterr().err and not (tmp_path / "m.yaml").exists()
    fresh = [*base[:-2], "--readout", str(tmp_path / "fresh.safetensors")]  # fitted on the command's own states
    assert main([*fresh, *lift, "--out", str(tmp_path / "m.yaml")]) == 0
    assert list(load_concepts(tmp_path / "m.yaml")) == ["up_prompt"] and "'and lift it high'" in capsys.readouterr().out
    assert main(["concepts", "--modifier", "up=and lift it high"]) == 2
    assert "add --action" in capsys.readouterr().err
    assert main([*fresh, "--modifier", "up"]) == 2 and "NAME=MODIFIER" in capsys.readouterr().err
    assert main(fresh) == 2 and "name at least one concept" in capsys.readouterr().err


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

    def expected_action(m, item):
        return bins(m, item).float().softmax(-1) @ torch.linspace(-1, 1, 16)

    fitted = ActionReadout.fit(model, [inputs], bins, positions="all")
    last = fitted.layers[0]
    assert fitted.jacobians[last].shape == (1, 7, 64) and torch.equal(fitted.values, torch.linspace(-1, 1, 16))
    effects = fitted.effects(model, last)
    with torch.no_grad():
        plain = expected_action(model, inputs)
        with Steerer(model, [Intervention([(last, 5)], "add", 1e-3, "raw", "all")]):
            change = expected_action(model, inputs) - plain
    assert torch.allclose(fitted.actions[0], plain, atol=1e-5) and change.abs().max() > 0
    assert torch.allclose(change, 1e-3 * effects[5, 0], atol=0.05 * change.abs().max().item())
    assert not attached(model)
