"""Adapters find the FFN output projection, embeddings, LM head, final norm and token roles."""

import pytest
import torch
from torch import nn

from arrcoc_steer.errors import AdapterError, ConfigError, UnknownNameError
from arrcoc_steer.models import Adapter, ModelSpec, register_spec, spec_for
from arrcoc_steer.models.adapters import _REGISTRY
from arrcoc_steer.models.tiny import IMAGE_TOKEN, TINY_ARCHS, example_inputs, tiny_model

# arch -> (down projection of layer 1, embedding, LM head, tied, final norm)
EXPECTED = {
    "llama": ("model.layers.1.mlp.down_proj", "model.embed_tokens", "lm_head", False, "model.norm"),
    "qwen2": ("model.layers.1.mlp.down_proj", "model.embed_tokens", "lm_head", False, "model.norm"),
    "gemma": ("model.layers.1.mlp.down_proj", "model.embed_tokens", "lm_head", True, "model.norm"),
    "gpt2": ("transformer.h.1.mlp.c_proj", "transformer.wte", "lm_head", True, "transformer.ln_f"),
    "bert": ("encoder.layer.1.output.dense", "embeddings.word_embeddings", None, True, None),
    "llava": ("model.language_model.layers.1.mlp.down_proj", "model.language_model.embed_tokens",
              "lm_head", False, "model.language_model.norm"),
    "paligemma": ("model.language_model.layers.1.mlp.down_proj", "model.language_model.embed_tokens",
                  "lm_head", True, "model.language_model.norm"),
    "idefics3": ("model.text_model.layers.1.mlp.down_proj", "model.text_model.embed_tokens",
                 "lm_head", False, "model.text_model.norm"),
    "qwen2_vl": ("model.language_model.layers.1.mlp.down_proj", "model.language_model.embed_tokens",
                 "lm_head", False, "model.language_model.norm"),
    "openvla": ("language_model.model.layers.1.mlp.down_proj", "language_model.model.embed_tokens",
                "language_model.lm_head", False, "language_model.model.norm"),
    "bert_policy": ("backbone.encoder.layer.1.output.dense", "backbone.embeddings.word_embeddings",
                    None, True, None),
}


def test_every_tiny_architecture_has_an_expectation():
    assert set(EXPECTED) == set(TINY_ARCHS)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_discovery_maps_the_canonical_points(arch):
    spec = spec_for(tiny_model(arch))
    down, embed, head, tied, norm = EXPECTED[arch]
    assert (spec.down_proj_path(1), spec.embed, spec.unembed, spec.tied, spec.final_norm) == (
        down, embed, head, tied, norm)
    assert spec.n_layers == 2 and spec.d_model == 64
    assert spec.path("layers.1.mlp.post") == down


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_mlp_post_is_the_input_of_the_output_projection_and_value_vectors_are_its_columns(arch):
    model = tiny_model(arch)
    adapter = Adapter(model)
    seen = {}
    module = adapter.module("layers.0.mlp.post")
    handle = module.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad():
        model(**example_inputs(model))
    handle.remove()
    x, y = seen["x"], seen["y"]  # (b, t, d_ff), (b, t, d_model)
    assert x.shape[-1] == adapter.spec.d_ff and y.shape[-1] == adapter.spec.d_model
    bias = getattr(module, "bias", None)
    recon = x @ adapter.value_vectors(0) + (bias if bias is not None else 0)  # sum_i act_i * v_i
    torch.testing.assert_close(recon, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch,kind", [("llama", "unembed"), ("gemma", "embed"), ("gpt2", "embed"),
                                       ("bert", "embed"), ("llava", "unembed"), ("openvla", "unembed")])
def test_auto_basis_is_unembedding_when_untied_else_embedding(arch, kind):
    adapter = Adapter(tiny_model(arch))
    name, basis = adapter.basis("auto")
    assert name == kind and basis.shape == (adapter.spec.vocab_size, adapter.spec.d_model)
    if kind == "unembed":
        assert torch.equal(basis, adapter.model.get_submodule(adapter.spec.unembed).weight)


def test_unembed_basis_on_a_model_without_head_is_an_error():
    with pytest.raises(ConfigError, match="no LM head"):
        Adapter(tiny_model("bert")).basis("unembed")


def test_final_norm_gain_follows_each_norm_convention():
    gemma = Adapter(tiny_model("gemma"))
    gemma.model.get_submodule(gemma.spec.final_norm).weight.data.fill_(0.5)
    assert torch.allclose(gemma.final_norm_gain(), torch.full((64,), 1.5), atol=1e-4)  # 1 + w
    llama = Adapter(tiny_model("llama"))
    llama.model.get_submodule(llama.spec.final_norm).weight.data.fill_(0.5)
    assert torch.allclose(llama.final_norm_gain(), torch.full((64,), 0.5), atol=1e-4)
    assert Adapter(tiny_model("bert")).final_norm_gain() is None


@pytest.mark.parametrize("arch", ["llava", "paligemma", "idefics3", "qwen2_vl"])
def test_image_positions_come_from_the_config_image_token(arch):
    model = tiny_model(arch)
    adapter = Adapter(model)
    assert adapter.spec.image_token_id == IMAGE_TOKEN
    ids = example_inputs(model)["input_ids"]
    roles = adapter.token_roles(ids)
    assert torch.equal(roles["image"], ids == IMAGE_TOKEN)
    assert torch.equal(roles["text"], ~roles["image"])


def test_openvla_layout_action_tokens_are_the_last_256_of_the_text_vocabulary():
    spec = spec_for(tiny_model("openvla"))
    assert spec.vocab_size == 32064
    assert spec.action_token_ids == tuple(range(31744, 32000))
    assert spec.describe_token(31999) == "[bin 0: -1.00]"  # OpenVLA counts bins down from the end
    assert spec.describe_token(31744) == "[bin 254: +1.00]"
    assert spec.describe_token(100) is None


def test_a_model_reporting_its_own_roles_and_action_tokenizer_is_used_as_is():
    model = tiny_model("bert_policy")
    adapter = Adapter(model)
    assert adapter.spec.action_token_ids == tuple(range(1, 257))
    assert adapter.describe_token(201) == model.action_tokenizer.describe(201)
    seen = {}
    hook = adapter.module("layers.0.mlp.post").register_forward_pre_hook(
        lambda m, args: seen.update(roles=adapter.token_roles()))
    model(**example_inputs(model, seq=5))
    hook.remove()
    assert seen["roles"]["action"][0].tolist() == [False] * (5 + 1 + 4) + [True] * 7
    with pytest.raises(AdapterError, match="only defined"):
        adapter.token_roles()


def test_the_real_minivla_policy_is_discovered():
    minivla = pytest.importorskip("arrcoc_steer.models.minivla")
    spec = spec_for(minivla.MiniVLA())
    assert spec.down_proj_path(5) == "backbone.encoder.layer.5.output.dense"
    assert (spec.n_layers, spec.d_model, spec.d_ff, spec.vocab_size) == (6, 384, 1536, 30522)
    assert spec.tied and spec.unembed is None and spec.final_norm is None
    assert spec.describe_token(201) == "[bin 200: +0.57]"


def test_lora_wrapped_projection_is_hooked_at_the_wrapper():
    class LoRA(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base, self.in_features, self.out_features = base, base.in_features, base.out_features
            self.lora_a = nn.Linear(base.in_features, 2, bias=False)

        @property
        def weight(self):
            return self.base.weight

        def forward(self, x):
            return self.base(x)

    model = tiny_model("llama")
    for layer in model.model.layers:
        layer.mlp.down_proj = LoRA(layer.mlp.down_proj)
    assert spec_for(model).down_proj == "mlp.down_proj"


class _Odd(nn.Module):
    """No ModuleList of FFN blocks: discovery cannot map it."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(100, 16)
        self.mix = nn.Linear(16, 16)


def test_unknown_layout_explains_how_to_register_a_spec_and_registration_fixes_it():
    with pytest.raises(AdapterError, match="register_spec"):
        spec_for(_Odd())
    spec = ModelSpec(arch="odd", n_layers=1, d_model=16, d_ff=16, vocab_size=100, layers="x",
                     down_proj="mix", embed="tok")
    register_spec("_Odd", spec)
    try:
        assert spec_for(_Odd()) is spec
    finally:
        _REGISTRY.pop("_Odd")


def test_steering_spec_protocol_wins_over_discovery():
    model = tiny_model("llama")
    custom = ModelSpec(arch="custom", n_layers=2, d_model=64, d_ff=192, vocab_size=512,
                       layers="model.layers", down_proj="mlp.down_proj", embed="model.embed_tokens")
    model.steering_spec = lambda: custom
    assert spec_for(model) is custom


def test_point_names_are_validated():
    spec = spec_for(tiny_model("gpt2"))
    assert spec.path("layers.0.resid_post") == "transformer.h.0"
    assert spec.path("unembed") == "lm_head" and spec.path("embed") == "transformer.wte"
    with pytest.raises(UnknownNameError, match="intervention point"):
        spec.path("layers.0.mlp.pre")
    with pytest.raises(ConfigError, match="out of range: gpt2 has 2 layers"):
        spec.path("layers.2.mlp.post")
    with pytest.raises(ConfigError, match="neuron 256 of layer 0 is out of range"):
        spec.check_neuron(0, 256)
    assert len(spec.points()) == 2 * 2 + 2


def test_spec_validates_its_sizes():
    with pytest.raises(ConfigError, match="d_ff"):
        ModelSpec(arch="x", n_layers=1, d_model=4, d_ff=0, vocab_size=5, layers="l",
                  down_proj="d", embed="e")
