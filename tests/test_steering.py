"""Steering: semantics of each mode, positions, both backends, lifecycle, validation, controls."""

import gc

import numpy as np
import pytest
import torch

from arrcoc_steer.concepts import ConceptSet, ModelRef
from arrcoc_steer.errors import CheckpointError, ConfigError, SteeringError
from arrcoc_steer.models import Adapter
from arrcoc_steer.models.tiny import IMAGE_TOKEN, TINY_ARCHS, example_inputs, tiny_model
from arrcoc_steer.steering import (Calibration, Intervention, ResidualDirection, ResidualMap, Steerer, calibrate,
                                   load_steer, random_control, random_direction, steer)

BACKENDS = ["hooks", "nnsight"]


def output(out):
    return out if torch.is_tensor(out) else getattr(out, "logits", None) if hasattr(out, "logits") \
        else out.last_hidden_state


class Recorder(torch.nn.Module):
    """Stands in for a down projection and keeps the input its forward actually received.

    A forward pre-hook would see the input before nnsight's controller edits it; the module's own
    forward sees what the projection computes with, whichever backend steers.
    """

    def __init__(self, base):
        super().__init__()
        self.base, self.in_features, self.out_features = base, base.in_features, base.out_features
        self.seen = []

    @property
    def weight(self):
        return self.base.weight

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.base(x)


def record(model, layer):
    """Wrap the down projection of ``layer`` in a :class:`Recorder` and return it."""
    adapter = Adapter(model)
    parent, _, name = adapter.spec.path(f"layers.{layer}.mlp.post").rpartition(".")
    recorder = Recorder(adapter.module(f"layers.{layer}.mlp.post"))
    setattr(model.get_submodule(parent), name, recorder)
    return recorder


def acts_seen(model, recorder, inputs):
    """The activations the recorded down projection computes with in one call."""
    recorder.seen.clear()
    with torch.no_grad():
        model(**inputs)
    return recorder.seen[0]


def clean(model) -> bool:
    """No hook of ours, router or nnsight controller left on any module (transformers' own stay)."""
    ours = [h for m in model.modules() for h in (*m._forward_pre_hooks.values(), *m._forward_hooks.values())
            if getattr(h, "__module__", "").startswith("arrcoc_steer")]
    return not ours and not any("forward" in m.__dict__ or "__nnsight__" in m.__dict__
                                for m in model.modules())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode,expect", [("clamp", lambda a: torch.full_like(a, 3.0)),
                                         ("add", lambda a: a + 3.0), ("scale", lambda a: a * 3.0)])
def test_modes_act_on_exactly_the_chosen_neurons(backend, mode, expect):
    model = tiny_model("llama")
    layer0, layer1 = record(model, 0), record(model, 1)
    x = example_inputs(model, batch=2)
    before0, before = acts_seen(model, layer0, x), acts_seen(model, layer1, x)
    with Steerer(model, Intervention(((1, 4), (1, 9)), mode=mode, alpha=3.0), backend=backend):
        after = acts_seen(model, layer1, x)
        assert torch.equal(layer0.seen[0], before0)  # layer 0 untouched
    idx = [4, 9]
    torch.testing.assert_close(after[..., idx], expect(before[..., idx]))
    keep = [i for i in range(before.shape[-1]) if i not in idx]
    assert torch.equal(after[..., keep], before[..., keep])
    assert clean(model)


VISION = ("llava", "paligemma", "idefics3", "qwen2_vl", "openvla", "bert_policy")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_nnsight_and_hooks_give_identical_outputs(arch):
    model = tiny_model(arch)
    x = example_inputs(model, batch=2)
    positions = "image" if arch in VISION else "text"
    interventions = [Intervention(((0, 3), (1, 5), (1, 9)), alpha=4.0, name="clamp"),
                     Intervention(((0, 7),), mode="add", alpha=-2.0, positions=positions, name="add"),
                     ResidualDirection({1: torch.randn(64)}, strength=0.5, name="dir")]
    outs, counts = {}, {}
    with torch.no_grad():
        base = output(model(**x))
        for backend in BACKENDS:
            with Steerer(model, interventions, backend=backend) as s:
                outs[backend] = output(model(**x))
            counts[backend] = s.counts
            assert clean(model)
        assert torch.equal(output(model(**x)), base)
    assert torch.equal(outs["hooks"], outs["nnsight"]) and not torch.equal(outs["hooks"], base)
    assert counts["hooks"] == counts["nnsight"]


def test_positions_select_image_tokens_only():
    model = tiny_model("llava")
    x = example_inputs(model, batch=2)
    image = x["input_ids"] == IMAGE_TOKEN  # (b, t)
    layer0 = record(model, 0)
    before = acts_seen(model, layer0, x)
    with Steerer(model, Intervention(((0, 2),), alpha=7.0, positions="image")) as s:
        after = acts_seen(model, layer0, x)
    assert (after[..., 2][image] == 7.0).all()
    assert torch.equal(after[..., 2][~image], before[..., 2][~image])
    assert s.counts == {"intervention 0": int(image.sum())}


@pytest.mark.parametrize("backend", BACKENDS)
def test_steering_stays_on_across_prefill_and_every_decode_step(backend):
    model = tiny_model("openvla")
    x = example_inputs(model)
    base = model.predict_action(**x)
    action = Intervention(((0, 3), (1, 5)), alpha=50.0, positions="action", name="action")
    everywhere = Intervention(((1, 2),), alpha=5.0, name="all")
    with Steerer(model, [action, everywhere], backend=backend) as s:
        steered = model.predict_action(**x)
        steered_again = model.predict_action(**x)
    assert not torch.equal(steered, base) and torch.equal(steered, steered_again)
    prefill = x["input_ids"].shape[1] + model.n_patches
    # 2 action steps of 6 decode steps (each input is 1 action token) in 2 layers, twice
    assert s.counts == {"action": 2 * 6 * 2, "all": 2 * (prefill + 6)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_everything_is_removed_after_an_exception(backend):
    model = tiny_model("bert")
    x = example_inputs(model)
    with torch.no_grad():
        base = output(model(**x))
        with pytest.raises(KeyError, match="boom"):
            with Steerer(model, Intervention(((0, 1),), alpha=9.0), backend=backend):
                model(**x)
                raise KeyError("boom")
        assert clean(model) and torch.equal(output(model(**x)), base)


def test_an_intervention_that_never_fires_is_an_error():
    model = tiny_model("openvla")
    with pytest.raises(SteeringError, match=r"^'action' \(layers \[0\], positions='action'\) never fired"):
        with Steerer(model, [Intervention(((0, 1),), positions="action", name="action"),
                             Intervention(((0, 2),), name="fine")]):
            model(**example_inputs(model))  # prefill only: no action token is an input yet
    with pytest.raises(SteeringError, match="never fired"):
        with Steerer(model, Intervention(((0, 1),))):
            pass  # the model was never called
    with Steerer(model, Intervention(((0, 1),)), strict=False) as s:
        pass
    assert s.counts == {"intervention 0": 0} and clean(model)


@pytest.mark.parametrize("bad,error,match", [
    (dict(neurons=((2, 0),)), SteeringError, "layer 2 is out of range"),
    (dict(neurons=((0, 192),)), SteeringError, "neuron 192 of layer 0 is out of range"),
    (dict(positions="image"), SteeringError, "marks no image tokens"),
    (dict(model=ModelRef("bert", 6, 1536)), SteeringError, "built for bert"),
    (dict(unit="calibrated"), SteeringError, "needs Steerer"),
])
def test_invalid_interventions_are_refused_before_anything_is_attached(bad, error, match):
    model = tiny_model("llama")
    spec = dict(neurons=((0, 1),)) | bad
    with pytest.raises(error, match=match):
        Steerer(model, Intervention(**spec)).attach()
    assert clean(model)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "3"])
def test_alpha_must_be_a_finite_number(alpha):
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        Intervention(((0, 1),), alpha=alpha)


def test_field_values_are_checked():
    with pytest.raises(ConfigError, match="mode must be one of clamp, add, scale; got 'set'"):
        Intervention(((0, 1),), mode="set")
    with pytest.raises(ConfigError, match="unit must be 'raw'"):
        Intervention(((0, 1),), mode="scale", unit="calibrated")
    with pytest.raises(ConfigError, match="backend"):
        Steerer(tiny_model("gpt2"), Intervention(((0, 1),)), backend="tl")


def test_two_nnsight_steerers_on_one_model_are_refused():
    model = tiny_model("gpt2")
    with Steerer(model, Intervention(((0, 1),)), backend="nnsight", strict=False):
        with pytest.raises(SteeringError, match="another nnsight Steerer"):
            Steerer(model, Intervention(((0, 2),)), backend="nnsight").attach()
    assert clean(model)


def test_calibrated_alpha_is_a_multiple_of_each_neurons_scale(tmp_path):
    model = tiny_model("bert")
    calib = calibrate(model, [example_inputs(model, seed=s) for s in range(4)], q=0.99)
    assert calib.scales.shape == (2, 192) and (calib.scales > 0).all() and calib.n_tokens == 32
    calib.save(tmp_path / "calib.safetensors")
    loaded = Calibration.load(tmp_path / "calib.safetensors")
    assert torch.equal(loaded.scales, calib.scales) and loaded.model == calib.model
    x = example_inputs(model)
    layer1 = record(model, 1)
    with Steerer(model, Intervention(((1, 3), (1, 8)), alpha=2.0, unit="calibrated"), calibration=loaded):
        after = acts_seen(model, layer1, x)
    torch.testing.assert_close(after[0, :, [3, 8]], (2.0 * calib.scales[1, [3, 8]]).expand(8, 2))


def test_calibration_matches_the_quantile_of_observed_activations():
    model = tiny_model("llama")
    inputs = [example_inputs(model, batch=2, seed=s) for s in range(3)]
    layer0 = record(model, 0)
    acts = torch.cat([acts_seen(model, layer0, x).reshape(-1, 192) for x in inputs]).abs()
    calib = calibrate(model, inputs, q=0.5)
    torch.testing.assert_close(calib.scales[0], acts.kthvalue(24, dim=0).values)  # 48 tokens


def test_random_control_matches_size_layers_and_alpha():
    concept = ConceptSet("slow", ((3, 10), (3, 11), (5, 2)), model=ModelRef("bert", 6, 1536))
    real = Intervention.from_concept(concept, alpha=2.0, unit="calibrated", positions="action")
    a, b = random_control(real, rng=7), random_control(real, rng=7)
    assert a == b and a != random_control(real, rng=8)
    assert sorted(l for l, _ in a.neurons) == [3, 3, 5] and not set(a.neurons) & set(real.neurons)
    assert (a.alpha, a.unit, a.positions, a.mode, a.name) == (2.0, "calibrated", "action", "clamp", "slow~random")
    control = random_control(concept, rng=np.random.default_rng(0))
    assert isinstance(control, ConceptSet) and control.layers == (3, 5) and len(control) == 3
    with pytest.raises(ConfigError, match="d_ff"):
        random_control(Intervention(((0, 1),)))


def test_residual_direction_from_contrast_is_the_mean_difference(tmp_path):
    model = tiny_model("llama")
    pos = [example_inputs(model, seed=s) for s in (1, 2)]
    neg = [example_inputs(model, seed=s) for s in (3, 4)]
    direction = ResidualDirection.from_contrast(model, pos, neg, layers=[0, 1], strength=2.0)

    def mean_block_output(prompts, layer):
        outs = []
        block = Adapter(model).module(f"layers.{layer}.resid_post")
        h = block.register_forward_hook(lambda m, a, o: outs.append(o if torch.is_tensor(o) else o[0]))
        with torch.no_grad():
            for p in prompts:
                model(**p)
        h.remove()
        return torch.cat(outs, 1).mean((0, 1))

    expected = mean_block_output(pos, 1) - mean_block_output(neg, 1)
    torch.testing.assert_close(direction.vectors[1], expected, rtol=1e-4, atol=1e-5)
    direction.save(tmp_path / "dir.safetensors")
    again = ResidualDirection.load(tmp_path / "dir.safetensors")
    assert again.strength == 2.0 and torch.equal(again.vectors[1], direction.vectors[1])
    with torch.no_grad():
        base = model(**pos[0]).logits
        with Steerer(model, again) as s:
            steered = model(**pos[0]).logits
    assert not torch.allclose(base, steered) and s.counts == {"contrast": 16}
    with pytest.raises(SteeringError, match="channels"):
        Steerer(model, ResidualDirection({0: torch.ones(5)}))


def test_top_layers_keeps_where_the_contrast_is_largest():
    d = ResidualDirection({0: torch.ones(4) * 0.1, 3: torch.ones(4) * 2.0, 5: torch.ones(4)}, strength=2.0,
                          positions="action", name="qs")
    top = d.top_layers(2)
    assert top.layers == (3, 5) and (top.strength, top.positions, top.name) == (2.0, "action", "qs")
    assert d.top_layers(1).layers == (3,)
    for k in (0, 4, 1.5, True):
        with pytest.raises(ConfigError, match=r"k must be an int in 1\.\.3"):
            d.top_layers(k)


def test_random_direction_matches_norm_layers_and_strength_only():
    d = ResidualDirection({2: torch.arange(8.0), 5: torch.ones(8) * 3}, strength=-2.0, positions="action", name="qs")
    a, b = random_direction(d, rng=3), random_direction(d, rng=3)
    assert a.layers == (2, 5) and (a.strength, a.positions, a.name) == (-2.0, "action", "qs~random")
    for layer in (2, 5):
        torch.testing.assert_close(a.vectors[layer].norm(), d.vectors[layer].norm())
        torch.testing.assert_close(a.vectors[layer], b.vectors[layer])  # seeded
        assert abs(torch.nn.functional.cosine_similarity(a.vectors[layer], d.vectors[layer], 0)) < 0.9
    assert not torch.equal(a.vectors[5], random_direction(d, rng=4).vectors[5])
    model = tiny_model("llama")  # a control is steerable like the direction it matches
    x = example_inputs(model)
    control = random_direction(ResidualDirection({1: torch.ones(Adapter(model).spec.d_model)}), rng=0)
    with torch.no_grad(), Steerer(model, control) as s:
        model(**x)
    assert s.counts == {"direction~random": 8}


def _scaled_run(model, layer: int, factor: float):
    """A runner whose ``{"x": inputs, "changed": bool}`` prompts scale block ``layer``'s output when changed."""
    block = Adapter(model).module(f"layers.{layer}.resid_post")

    def run(m, prompt):
        if not prompt["changed"]:
            return m(**prompt["x"])
        h = block.register_forward_hook(lambda _m, _a, out: (out * factor if torch.is_tensor(out)
                                                               else (out[0] * factor, *out[1:])), prepend=True)
        try:
            return m(**prompt["x"])
        finally:
            h.remove()

    return run


def test_residual_map_learns_a_state_dependent_change_and_reproduces_it(tmp_path):
    model = tiny_model("llama")
    inputs = [example_inputs(model, seed=s) for s in range(40)]
    run = _scaled_run(model, 1, 1.5)  # the "modifier": block 1's output grows by half, state by state
    fitted = ResidualMap.fit(model, [{"x": x, "changed": False} for x in inputs],
                             [{"x": x, "changed": True} for x in inputs], [1], run=run, ridge=1e-3, name="grow")
    a, b = fitted.maps[1]
    assert a.shape == (1, Adapter(model).spec.d_model, Adapter(model).spec.d_model)
    torch.testing.assert_close(torch.diagonal(a[0]), torch.full((a.shape[-1],), 0.5), atol=0.05, rtol=0)
    fitted.save(tmp_path / "map.safetensors")
    again = load_steer(tmp_path / "map.safetensors")
    assert isinstance(again, ResidualMap) and again.name == "grow" and torch.equal(again.maps[1][0], a)
    held_out = example_inputs(model, seed=99)
    fresh = [example_inputs(model, seed=s) for s in (101, 102)]
    [r2] = again.score(model, [{"x": x, "changed": False} for x in fresh], [{"x": x, "changed": True} for x in fresh],
                       run=run).values()  # fmt: skip
    assert r2.shape == (1,) and r2.item() > 0.95  # a linear change, explained on pairs it never saw

    def after_block_1(prompt):  # read last, after every edit
        seen = []
        h = Adapter(model).module("layers.1.resid_post").register_forward_hook(
            lambda _m, _a, out: seen.append(out if torch.is_tensor(out) else out[0]))
        try:
            run(model, prompt)
        finally:
            h.remove()
        return seen[0]

    with torch.no_grad():
        want = after_block_1({"x": held_out, "changed": True})
        plain = after_block_1({"x": held_out, "changed": False})
        with Steerer(model, again) as s:
            got = after_block_1({"x": held_out, "changed": False})
        direction = ResidualDirection.from_contrast(model, [{"x": x, "changed": True} for x in inputs],
                                                    [{"x": x, "changed": False} for x in inputs], [1], run=run)
        with Steerer(model, direction):
            shifted = after_block_1({"x": held_out, "changed": False})
    assert s.counts == {"grow": 8}
    # the map reproduces the change on an unseen prompt; the mean difference (a fixed vector) cannot
    assert (got - want).norm() < 0.1 * (plain - want).norm()
    assert (got - want).norm() < 0.5 * (shifted - want).norm()
    with pytest.raises(CheckpointError, match="holds a residual map"):
        ResidualDirection.load(tmp_path / "map.safetensors")


def test_residual_map_errors_and_its_random_control():
    d = 16
    m = ResidualMap({2: (torch.randn(3, d, d), torch.randn(3, d))}, strength=0.5, positions="action", name="q")
    rotated = random_direction(m, rng=1)
    x = torch.randn(10, d)
    for p in range(3):  # every activation moves as far as under the map, elsewhere
        edit = x @ m.maps[2][0][p] + m.maps[2][1][p]
        turned = x @ rotated.maps[2][0][p] + rotated.maps[2][1][p]
        torch.testing.assert_close(turned.norm(dim=1), edit.norm(dim=1), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(turned, edit)
    assert (rotated.strength, rotated.positions, rotated.name) == (0.5, "action", "q~random")
    with pytest.raises(ConfigError, match=r"A must be \(p, d, d\) and b \(p, d\)"):
        ResidualMap({0: (torch.randn(4, 5), torch.randn(4))})
    with pytest.raises(ConfigError, match="NaN or inf"):
        ResidualMap({0: (torch.full((4, 4), float("nan")), torch.zeros(4))})
    model = tiny_model("llama")
    with pytest.raises(ConfigError, match="paired prompts, got 2 source and 1 target"):
        ResidualMap.fit(model, [example_inputs(model)] * 2, [example_inputs(model)], [0])
    with pytest.raises(ConfigError, match="ridge must be > 0"):
        ResidualMap.fit(model, [example_inputs(model)], [example_inputs(model)], [0], ridge=0)
    with pytest.raises(SteeringError, match="map is 16-dimensional"):
        Steerer(model, ResidualMap({0: (torch.zeros(d, d), torch.zeros(d))}))
    with pytest.raises(ConfigError, match="Steerer takes Intervention, ResidualDirection or ResidualMap objects"):
        Steerer(model, ["fast"])


def test_steer_shorthand_clamps_a_concept():
    model = tiny_model("qwen2")
    concept = ConceptSet("c", ((0, 1), (1, 2)), model=ModelRef.of(model))
    with steer(model, concept, 5.0, positions="text") as s:
        model(**example_inputs(model))
    assert s.counts == {"c": 16}


def test_the_real_minivla_is_steered_at_its_action_positions():
    minivla = pytest.importorskip("arrcoc_steer.models.minivla")
    policy = minivla.MiniVLA().eval()
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    obs = {"agentview": image, "wrist": image, "state": np.zeros(policy.config.state_dim, np.float32)}
    base = policy.predict_action(obs, "pick up the red block", budget=64)
    with Steerer(policy, Intervention(tuple((l, n) for l in range(6) for n in range(64)), alpha=20.0,
                                      positions="action")) as s:
        steered = policy.predict_action(obs, "pick up the red block", budget=64)
    assert s.counts == {"intervention 0": 6 * 7} and not np.array_equal(base, steered)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_control_loops_do_not_accumulate_objects(backend):
    model = tiny_model("bert")
    x = example_inputs(model, seq=4)
    steer_all = Intervention(((0, 1), (1, 2)), alpha=1.0)
    steer_text = Intervention(((0, 3),), positions="text")  # masked counts stay on the device
    with torch.no_grad(), Steerer(model, [steer_all, steer_text], backend=backend) as s:
        for _ in range(20):
            model(**x)
        gc.collect()
        before = len(gc.get_objects())
        for _ in range(150):
            model(**x)
        gc.collect()
        growth = len(gc.get_objects()) - before
    assert growth < 50, f"{growth} objects retained over 150 steered calls"
    assert s.counts == {"intervention 0": 170 * 2 * 4, "intervention 1": 170 * 4}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("arch", ["llama", "openvla", "bert_policy"])
def test_cuda_backends_agree_and_count_without_syncing_per_call(arch):
    model = tiny_model(arch).cuda()
    x = {k: v.cuda() for k, v in example_inputs(model, batch=2).items()}
    positions = "text" if arch == "llama" else "image"
    interventions = [Intervention(((0, 3), (1, 5)), alpha=4.0, name="clamp"),
                     Intervention(((1, 7),), mode="add", alpha=1.0, positions=positions, name="masked")]
    outs, counts = {}, {}
    with torch.no_grad():
        for backend in BACKENDS:
            with Steerer(model, interventions, backend=backend) as s:
                outs[backend] = output(model(**x))
            counts[backend] = s.counts
    assert torch.equal(outs["hooks"], outs["nnsight"]) and counts["hooks"] == counts["nnsight"]
    assert clean(model)
