"""Model adapters: where an architecture keeps its FFN neurons, embeddings, unembedding and norms.

Every tool in arrcoc_steer addresses a model through a few canonical, model-independent
intervention points (the names logs and errors print):

=========================  ====================================================================
``layers.{i}.mlp.post``    input of layer i's FFN output projection = the neuron activations
                           (act(gate)*up for Llama/Qwen/Gemma, GELU(fc) for GPT-2 and BERT),
                           shape ``(b, t, d_ff)``
``layers.{i}.resid_post``  output of block i (the residual stream after it), ``(b, t, d_model)``
``embed``                  the input token embedding
``unembed``                the LM head (absent on encoders such as BERT)
=========================  ====================================================================

A :class:`ModelSpec` maps those names onto module paths. :func:`spec_for` finds it for a model:

1. the model's own ``steering_spec()`` if it has one (the policy protocol);
2. a spec registered with :func:`register_spec` for the model's class (or a base class);
3. structural discovery: the input embedding (``get_input_embeddings()``, else the largest
   ``nn.Embedding``); the repeated block list (the ``ModuleList`` whose every block has an FFN
   output projection — a Linear or GPT-2 ``Conv1D`` mapping ``d_ff > d_model`` back to
   ``d_model`` — and whose path shares the longest prefix with the embedding, which picks the
   language model over a vision tower); the LM head (``get_output_embeddings()``, else a Linear
   ``d_model -> vocab``); a final norm beside the block list; image / action token ids from the
   config or the model's ``action_tokenizer``.

So an architecture with a common layout needs no code; one that does not raises
:class:`~arrcoc_steer.errors.AdapterError` showing the ``register_spec`` call that fixes it.

>>> from arrcoc_steer.models.tiny import tiny_model
>>> spec = spec_for(tiny_model("llama"))
>>> spec.down_proj_path(1), spec.unembed, spec.final_norm
('model.layers.1.mlp.down_proj', 'lm_head', 'model.norm')
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import AdapterError, ConfigError, UnknownNameError

_POINT = re.compile(r"^layers\.(\d+)\.(mlp\.post|resid_post)$")
_DOWN_NAMES = ("down_proj", "c_proj", "fc2", "dense", "w2", "wo", "out_proj")  # tie-breakers


@dataclass(frozen=True)
class ModelSpec:
    """Where one architecture keeps what the interpretability tools need (paths from the root).

    Attributes:
        arch: short architecture name for messages and cache file names (``"llama"``).
        n_layers, d_model, d_ff, vocab_size: sizes of the language model.
        layers: path of the block list, e.g. ``"model.layers"``.
        down_proj: path of the FFN output projection inside a block, e.g. ``"mlp.down_proj"``.
        embed: path of the input token embedding.
        unembed: path of the LM head, or ``None`` when the model has none.
        tied: whether the LM head shares the embedding's weight (or is absent).
        final_norm: path of the norm applied before the LM head, or ``None`` (e.g. BERT).
        down_proj_transposed: the projection stores its weight as ``(d_ff, d_model)`` (GPT-2's
            ``Conv1D``) rather than ``nn.Linear``'s ``(d_model, d_ff)``.
        image_token_id: the id whose positions hold image features, if the model marks them.
        action_token_ids: ids that encode action bins (empty for a plain language model).
        describe_token: readable name of an action token (``"[bin 200: +0.57]"``), else ``None``.
    """

    arch: str
    n_layers: int
    d_model: int
    d_ff: int
    vocab_size: int
    layers: str
    down_proj: str
    embed: str
    unembed: str | None = None
    tied: bool = True
    final_norm: str | None = None
    down_proj_transposed: bool = False
    image_token_id: int | None = None
    action_token_ids: tuple[int, ...] = field(default=(), repr=False)
    describe_token: Callable[[int], str | None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for name in ("n_layers", "d_model", "d_ff", "vocab_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"ModelSpec.{name} must be a positive int, got {getattr(self, name)!r}")
        object.__setattr__(self, "action_token_ids", tuple(int(i) for i in self.action_token_ids))

    def down_proj_path(self, layer: int) -> str:
        return f"{self.layers}.{self.check_layer(layer)}.{self.down_proj}"

    def block_path(self, layer: int) -> str:
        return f"{self.layers}.{self.check_layer(layer)}"

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer!r} is out of range: {self.arch} has {self.n_layers} "
                              f"layers (0..{self.n_layers - 1})")
        return layer

    def check_neuron(self, layer: int, neuron: int) -> None:
        self.check_layer(layer)
        if not isinstance(neuron, int) or not 0 <= neuron < self.d_ff:
            raise ConfigError(f"neuron {neuron!r} of layer {layer} is out of range: {self.arch} "
                              f"has {self.d_ff} FFN neurons per layer (0..{self.d_ff - 1})")

    def path(self, point: str) -> str:
        """Module path of a canonical point; for ``mlp.post`` the module whose *input* it is."""
        if point == "embed":
            return self.embed
        if point == "unembed":
            if self.unembed is None:
                raise AdapterError(f"{self.arch} has no LM head, so it has no 'unembed' point")
            return self.unembed
        match = _POINT.match(point)
        if match is None:
            raise UnknownNameError("intervention point", point, self.points()[:4] + ["embed", "unembed"])
        layer = self.check_layer(int(match.group(1)))
        return self.down_proj_path(layer) if match.group(2) == "mlp.post" else self.block_path(layer)

    def points(self) -> list[str]:
        """Every canonical point name of this model."""
        names = [f"layers.{i}.{kind}" for i in range(self.n_layers) for kind in ("mlp.post", "resid_post")]
        return names + ["embed"] + (["unembed"] if self.unembed else [])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_layers, d_ff, d_model)``: what a neuron index means for this model."""
        return (self.n_layers, self.d_ff, self.d_model)

    @property
    def fingerprint(self) -> str:
        """Short hash of the layout (not the weights): architecture and every size."""
        key = f"{self.arch}|{self.n_layers}|{self.d_model}|{self.d_ff}|{self.vocab_size}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------- registry
_REGISTRY: dict[type | str, Callable[[nn.Module], ModelSpec]] = {}


def register_spec(model_class: type | str, spec: ModelSpec | Callable[[nn.Module], ModelSpec]) -> None:
    """Teach :func:`spec_for` an architecture discovery cannot map.

    ``model_class`` is a class (subclasses match too) or a class name; ``spec`` is a fixed
    :class:`ModelSpec` or a function ``model -> ModelSpec``.

    >>> register_spec("MyMoEPolicy", ModelSpec(arch="my-moe", n_layers=2, d_model=64, d_ff=256,
    ...     vocab_size=512, layers="lm.blocks", down_proj="ffn.out", embed="lm.tok"))
    """
    _REGISTRY[model_class] = spec if callable(spec) and not isinstance(spec, ModelSpec) else (lambda _m: spec)


def spec_for(model: nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` of ``model``: its own ``steering_spec()``, a registered one, or discovered."""
    if callable(getattr(model, "steering_spec", None)):
        return model.steering_spec()
    for cls in type(model).__mro__:
        for key in (cls, cls.__name__):
            if key in _REGISTRY:
                return _REGISTRY[key](model)
    return _discover(model)


# ---------------------------------------------------------------------------------- discovery
def _linear_dims(module: nn.Module) -> tuple[int, int, bool] | None:
    """``(in, out, transposed)`` of a linear map, else ``None``.

    Covers ``nn.Linear``, wrappers that expose ``in_features``/``out_features`` (LoRA layers) and
    GPT-2's ``Conv1D``, which stores its weight as ``(in, out)``.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        return None
    if type(module).__name__ == "Conv1D":
        return weight.shape[0], weight.shape[1], True
    n_in, n_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(n_in, int) and isinstance(n_out, int):
        return n_in, n_out, False
    return None


def _down_projection(block: nn.Module, d_model: int) -> tuple[str, int, bool] | None:
    """The block's FFN output projection as ``(path, d_ff, transposed)``, or ``None``.

    A linear map ``d_ff -> d_model`` with ``d_ff > d_model`` outside attention; of nested matches
    (a LoRA wrapper and its base layer) the outermost, whose input every path reads.
    """
    found = []
    for name, module in block.named_modules():
        dims = _linear_dims(module)
        if dims and dims[1] == d_model and dims[0] > d_model and "att" not in name.lower():
            if not any(name.startswith(outer + ".") for outer, _, _ in found):
                found.append((name, dims[0], dims[2]))
    if len(found) > 1:  # prefer a conventional name, e.g. a block that also has a fused output
        named = [f for f in found if f[0].rsplit(".", 1)[-1] in _DOWN_NAMES]
        found = named if len(named) == 1 else found
    return found[0] if len(found) == 1 else None


def _input_embedding(model: nn.Module, names: dict[int, str]) -> nn.Embedding | None:
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            emb = getter()
            if isinstance(emb, nn.Embedding) and id(emb) in names:
                return emb
        except (NotImplementedError, AttributeError):
            pass
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    return max(embeddings, key=lambda m: m.num_embeddings, default=None)


def _output_embedding(model: nn.Module, names: dict[int, str], vocab: int, d_model: int,
                      layers_path: str) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            head = getter()
            if head is not None and id(head) in names:
                return head
        except (NotImplementedError, AttributeError):
            pass
    for name, module in model.named_modules():
        dims = _linear_dims(module)
        if dims and dims[:2] == (d_model, vocab) and not name.startswith(layers_path + "."):
            return module
    return None


def _final_norm(model: nn.Module, layers_path: str, d_model: int) -> str | None:
    parent_path, _, _ = layers_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    norms = [name for name, child in parent.named_children()
             if "norm" in type(child).__name__.lower() and _size(child) == d_model]
    if len(norms) != 1:
        return None
    return f"{parent_path}.{norms[0]}" if parent_path else norms[0]


def _size(module: nn.Module) -> int | None:
    weight = getattr(module, "weight", None)
    return weight.shape[-1] if isinstance(weight, torch.Tensor) else None


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def _discover(model: nn.Module) -> ModelSpec:
    names = {id(m): n for n, m in model.named_modules()}
    embed = _input_embedding(model, names)
    if embed is None:
        raise _unknown_layout(model, "no token embedding (nn.Embedding) was found")
    embed_path, d_model, vocab = names[id(embed)], embed.embedding_dim, embed.num_embeddings

    candidates = []  # (prefix shared with the embedding, n_layers, path, down_proj, d_ff, transposed)
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        downs = [_down_projection(block, d_model) for block in module]
        if all(downs) and len({d[:2] for d in downs}) == 1:
            down_name, d_ff, transposed = downs[0]
            candidates.append((_common_prefix(path, embed_path), len(module), path, down_name, d_ff, transposed))
    if not candidates:
        raise _unknown_layout(model, f"no block list whose blocks map d_ff > {d_model} back to "
                                     f"d_model = {d_model} with a Linear (an FFN output projection)")
    _, n_layers, layers_path, down_name, d_ff, transposed = max(candidates)

    head = _output_embedding(model, names, vocab, d_model, layers_path)
    tied = head is None or head.weight.data_ptr() == embed.weight.data_ptr()
    action_ids, describe = _action_tokens(model)
    config = getattr(model, "config", None)
    image_id = getattr(config, "image_token_id", None)
    image_id = getattr(config, "image_token_index", None) if image_id is None else image_id
    return ModelSpec(
        arch=_arch_name(model), n_layers=n_layers, d_model=d_model, d_ff=d_ff, vocab_size=vocab,
        layers=layers_path, down_proj=down_name, embed=embed_path,
        unembed=names[id(head)] if head is not None else None, tied=tied,
        final_norm=_final_norm(model, layers_path, d_model), down_proj_transposed=transposed,
        image_token_id=int(image_id) if isinstance(image_id, int) else None,
        action_token_ids=action_ids, describe_token=describe)


def _arch_name(model: nn.Module) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(model_type, str) and model_type:
        return model_type
    name = type(model).__name__
    for suffix in ("StandIn", "ForConditionalGeneration", "ForCausalLM", "LMHeadModel", "Model"):
        name = name.removesuffix(suffix)
    return name.lower() or "model"


def _action_tokens(model: nn.Module) -> tuple[tuple[int, ...], Callable[[int], str | None] | None]:
    """Action-bin ids and their describer: the model's ``action_tokenizer``, or OpenVLA's layout."""
    tokenizer = getattr(model, "action_tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "token_ids"):
        return tuple(int(i) for i in tokenizer.token_ids), getattr(tokenizer, "describe", None)
    n_bins = getattr(getattr(model, "config", None), "n_action_bins", None)
    vocab = getattr(model, "vocab_size", None)  # OpenVLA: text vocabulary without the padding
    if isinstance(n_bins, int) and isinstance(vocab, int):
        centers = getattr(model, "bin_centers", None)
        first = vocab - n_bins

        def describe(token_id: int) -> str | None:
            if not first <= int(token_id) < vocab:
                return None
            b = min(vocab - int(token_id) - 1, n_bins - 2)  # OpenVLA's clip(vocab - id - 1)
            return f"[bin {b}: {float(centers[b]):+.2f}]" if centers is not None else f"[bin {b}]"

        return tuple(range(first, vocab)), describe
    return (), None


def _unknown_layout(model: nn.Module, why: str) -> AdapterError:
    cls = type(model).__name__
    return AdapterError(
        f"Cannot map {cls} onto the canonical intervention points: {why}.\n"
        f"Register its layout once, e.g.:\n\n"
        f"    from arrcoc_steer.models import ModelSpec, register_spec\n"
        f"    register_spec({cls!r}, ModelSpec(\n"
        f"        arch='my-arch', n_layers=32, d_model=4096, d_ff=11008, vocab_size=32064,\n"
        f"        layers='model.layers',          # the block list\n"
        f"        down_proj='mlp.down_proj',      # FFN output projection inside a block\n"
        f"        embed='model.embed_tokens', unembed='lm_head', tied=False,\n"
        f"        final_norm='model.norm'))\n\n"
        f"or give the model a steering_spec() method returning that ModelSpec.")


# ------------------------------------------------------------------------------------ adapter
class Adapter:
    """A model together with its :class:`ModelSpec`: modules, weights and token roles by point name.

    >>> from arrcoc_steer.models.tiny import tiny_model
    >>> adapter = Adapter(tiny_model("gpt2"))
    >>> tuple(adapter.value_vectors(0).shape)  # (d_ff, d_model): row i = neuron i's value vector
    (256, 64)
    """

    def __init__(self, model: nn.Module, spec: ModelSpec | None = None):
        self.model = model
        self.spec = spec if spec is not None else spec_for(model)

    def __repr__(self) -> str:
        return f"Adapter({type(self.model).__name__}, {self.spec.arch}, {self.spec.n_layers}x{self.spec.d_ff})"

    def module(self, point: str) -> nn.Module:
        """The module behind a canonical point (for ``layers.{i}.mlp.post``: the down projection)."""
        path = self.spec.path(point)
        try:
            return self.model.get_submodule(path)
        except AttributeError as exc:
            raise AdapterError(f"{point!r} maps to {path!r}, which {type(self.model).__name__} "
                               f"does not have: is the ModelSpec for another model?") from exc

    def value_vectors(self, layer: int) -> torch.Tensor:
        """``(d_ff, d_model)``: row i is neuron i's value vector (column i of the projection weight)."""
        weight = self.module(f"layers.{layer}.mlp.post").weight.detach()
        return weight if self.spec.down_proj_transposed else weight.T

    def embedding(self) -> torch.Tensor:
        """``(vocab, d_model)`` input embedding matrix."""
        return self.model.get_submodule(self.spec.embed).weight.detach()

    def unembedding(self) -> torch.Tensor | None:
        """``(vocab, d_model)`` LM head matrix, or ``None`` when the model has no head."""
        if self.spec.unembed is None:
            return None
        head = self.model.get_submodule(self.spec.unembed)
        dims = _linear_dims(head)
        return head.weight.detach().T if dims and dims[2] else head.weight.detach()

    def basis(self, kind: str = "auto") -> tuple[str, torch.Tensor]:
        """The token basis to read value vectors in: ``(name, (vocab, d_model))``.

        ``"auto"`` is the paper's choice: the unembedding when it is untied, else the embedding.
        """
        if kind not in ("auto", "embed", "unembed"):
            raise ConfigError(f"basis must be 'auto', 'embed' or 'unembed', got {kind!r}")
        if kind == "unembed" and self.spec.unembed is None:
            raise ConfigError(f"basis='unembed' but {self.spec.arch} has no LM head; use 'embed'")
        if kind == "unembed" or (kind == "auto" and not self.spec.tied and self.spec.unembed):
            return "unembed", self.unembedding()[: self.spec.vocab_size]
        return "embed", self.embedding()

    @torch.no_grad()
    def final_norm_gain(self) -> torch.Tensor | None:
        """``(d_model,)`` elementwise gain of the final norm, or ``None`` when there is no final norm.

        LayerNorm's is its weight; an RMSNorm variant's is measured as ``norm(ones)`` so that
        Gemma's ``1 + weight`` convention comes out right without special cases.
        """
        if self.spec.final_norm is None:
            return None
        norm = self.model.get_submodule(self.spec.final_norm)
        if isinstance(norm, nn.LayerNorm):
            return norm.weight.detach()
        ref = next(norm.parameters())
        return norm(torch.ones(1, self.spec.d_model, device=ref.device, dtype=ref.dtype))[0]

    def describe_token(self, token_id: int) -> str | None:
        describe = self.spec.describe_token
        return describe(int(token_id)) if describe is not None else None

    def token_roles(self, input_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Bool masks ``(b, t)`` of the text / image / action positions of the current call.

        Uses the model's own ``token_roles()`` when it has one (it knows what it spliced in);
        otherwise classifies ``input_ids`` with the spec's image and action token ids.
        """
        own = getattr(self.model, "token_roles", None)
        if callable(own):
            roles = own()
            if roles is None:
                raise AdapterError(f"{type(self.model).__name__}.token_roles() returned None: it is "
                                   f"only defined while the model's forward call is running")
            return roles
        if input_ids is None:
            raise AdapterError(f"{self.spec.arch}: token positions need the call's input_ids "
                               f"(or a model.token_roles() method)")
        image = input_ids == self.spec.image_token_id if self.spec.image_token_id is not None \
            else torch.zeros_like(input_ids, dtype=torch.bool)
        if self.spec.action_token_ids:
            ids = torch.tensor(self.spec.action_token_ids, device=input_ids.device)
            action = torch.isin(input_ids, ids)
        else:
            action = torch.zeros_like(input_ids, dtype=torch.bool)
        return {"text": ~image & ~action, "image": image, "action": action}

    def with_spec(self, **changes) -> Adapter:
        """A copy whose spec has ``changes`` applied (e.g. ``image_token_id=...``)."""
        return Adapter(self.model, replace(self.spec, **changes))
