"""The neuron atlas: every FFN neuron's value vector read in the token basis (Geva et al. 2022).

A transformer FFN writes ``sum_i act_i * v_i`` into the residual stream, where the value vector
``v_i`` is column ``i`` of the output projection. Projecting ``v_i`` onto the token basis ``B``
(``(vocab, d_model)``: the LM head when it is untied, else the input embedding) says which tokens
neuron ``i`` promotes when it fires: ``scores = B @ v_i``. Häon et al. (CoRL 2025,
arXiv 2509.00328) use these projections to find "slow", "up", ... neurons in VLAs and to measure
how many neurons fine-tuning rewired to action tokens (:meth:`NeuronAtlas.action_fraction`).

Algorithm, per layer, for neuron chunks of ``chunk_size`` rows (memory stays bounded at OpenVLA
scale, 32 x 11008 neurons onto a 32,064 x 4096 basis):

1. ``S = V_chunk @ B.T`` into one reused ``(chunk, vocab)`` buffer (the only large temporary);
2. exact two-stage top-k: the max of each group of 64 columns, the top-k groups by that max
   (they must hold the top-k entries), then top-k among those ``k * 64`` candidates — one
   streaming reduction instead of a full-width sort, which is what keeps a GPU near matmul speed;
3. optionally the same on ``-S`` for the most suppressed tokens (``both_signs``).

Options: ``score="cosine"`` normalises value vectors and basis rows; ``norm_weighting`` multiplies
value vectors by the final norm's gain (what the LM head actually sees). The atlas is saved as
safetensors (top-k ids and scores) plus a JSON sidecar (settings, readable vocabulary) keyed by a
hash of the weights it was built from, so a cache is reused only for the same weights.

>>> from arrcoc_steer.models.tiny import tiny_model
>>> atlas = NeuronAtlas.build(tiny_model("gpt2"), top_k=5, progress=False)
>>> tuple(atlas.token_ids.shape)  # (layers, neurons, k)
(2, 256, 5)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .models.adapters import Adapter

FORMAT = "arrcoc-atlas/1"
_GROUP = 64  # columns per group in the two-stage top-k


@dataclass(frozen=True)
class AtlasSettings:
    """How an atlas was built; part of its cache key."""

    top_k: int = 10
    basis: str = "auto"  # resolved to "embed" or "unembed" in a built atlas
    score: str = "dot"  # "dot" (the paper) or "cosine"
    norm_weighting: bool = False
    both_signs: bool = False

    def __post_init__(self):
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"top_k must be a positive int, got {self.top_k!r}")
        if self.basis not in ("auto", "embed", "unembed"):
            raise ConfigError(f"basis must be 'auto', 'embed' or 'unembed', got {self.basis!r}")
        if self.score not in ("dot", "cosine"):
            raise ConfigError(f"score must be 'dot' or 'cosine', got {self.score!r}")

    @property
    def key(self) -> str:
        signs = "both" if self.both_signs else "top"
        return f"{self.basis}-{self.score}-norm{int(self.norm_weighting)}-k{self.top_k}-{signs}"


@dataclass(frozen=True)
class NeuronHit:
    """One neuron found by :meth:`NeuronAtlas.search`."""

    layer: int
    neuron: int
    score: float
    matched: tuple[str, ...]
    tokens: tuple[str, ...]

    @property
    def flat(self) -> tuple[int, int]:
        return (self.layer, self.neuron)


class NeuronAtlas:
    """Top-k tokens and scores of every FFN neuron of a model; build with :meth:`build`.

    Attributes:
        token_ids: ``(n_layers, d_ff, k)`` int32, most promoted tokens first.
        scores: ``(n_layers, d_ff, k)`` float32 projection scores of those tokens.
        bottom_ids, bottom_scores: the most suppressed tokens (``both_signs``), else ``None``.
        meta: model layout, settings, ``weights_hash`` and ``action_token_ids``.
        vocab: readable string of every token id (action bins described, e.g. ``[bin 200: +0.57]``).
    """

    def __init__(self, token_ids, scores, meta: dict, vocab: list[str], bottom_ids=None, bottom_scores=None):
        self.token_ids, self.scores = token_ids, scores
        self.bottom_ids, self.bottom_scores = bottom_ids, bottom_scores
        self.meta, self.vocab = meta, vocab
        self._words: list[str] | None = None

    # ------------------------------------------------------------------------------ building
    @classmethod
    @torch.no_grad()
    def build(cls, model: nn.Module, *, top_k: int = 10, basis: str = "auto", score: str = "dot",
              norm_weighting: bool = False, both_signs: bool = False, tokenizer=None,
              chunk_size: int | None = None, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None, cache: str | Path | None = None,
              strict: bool = False, progress: bool = True) -> NeuronAtlas:
        """Project every value vector of ``model`` onto its token basis and keep the top-k.

        Args:
            model: any model :func:`~arrcoc_steer.models.spec_for` maps (or an :class:`Adapter`).
            top_k: tokens kept per neuron (and per sign with ``both_signs``).
            basis: ``"auto"`` (unembedding if untied, else embedding), ``"embed"``, ``"unembed"``.
            score: ``"dot"`` (raw projection, the paper's) or ``"cosine"``.
            norm_weighting: multiply value vectors by the final norm's gain first (needs one).
            both_signs: also keep the ``top_k`` most negative tokens.
            tokenizer: decodes token ids; defaults to ``model.tokenizer`` if present, else ``<id>``.
            chunk_size: neurons projected at once; default keeps the score buffer near 512 MiB.
            device, dtype: where and in what precision to compute (default: the weights' device;
                float32 on CPU, the weights' dtype on GPU).
            cache: a ``.safetensors`` file or a directory; a cached atlas built from the same
                weights and settings is loaded instead of rebuilt, a stale one is rebuilt.
            strict: raise :class:`CheckpointError` on a stale cache instead of rebuilding it.
            progress: show a tqdm bar over layers.
        """
        adapter = model if isinstance(model, Adapter) else Adapter(model)
        spec = adapter.spec
        AtlasSettings(top_k, basis, score, norm_weighting, both_signs)  # validate before any work
        basis_name, basis_matrix = adapter.basis(basis)
        settings = AtlasSettings(top_k, basis_name, score, norm_weighting, both_signs)
        gain = adapter.final_norm_gain() if norm_weighting else None
        if norm_weighting and gain is None:
            raise ConfigError(f"norm_weighting=True but {spec.arch} has no final norm "
                              f"(post-LN models such as BERT have none); leave it False")
        digest = weights_hash(adapter, basis_matrix, gain)

        path = _cache_path(cache, spec, settings) if cache is not None else None
        if path is not None and path.exists():
            cached = cls.load(path)
            stale = _mismatch(cached.meta, digest, settings)
            if stale is None:
                return cached
            if strict:
                raise CheckpointError(f"stale atlas cache {path}: {stale}. Delete it or build with "
                                      f"strict=False to rebuild it")
            warnings.warn(f"atlas cache {path} is stale ({stale}); rebuilding it", stacklevel=2)

        device = torch.device(device) if device is not None else basis_matrix.device
        dtype = dtype or (torch.float32 if device.type == "cpu" else basis_matrix.dtype)
        projector = _Projector(basis_matrix, settings, device, dtype, chunk_size)
        layers = range(spec.n_layers)
        if progress:
            from tqdm.auto import tqdm

            layers = tqdm(layers, desc=f"atlas {spec.arch}", unit="layer")
        results = [projector(_weighted(adapter.value_vectors(i), gain)) for i in layers]
        top_ids, top_scores, bottom_ids, bottom_scores = (
            torch.stack(part) if part[0] is not None else None for part in zip(*results))

        meta = dict(format=FORMAT, arch=spec.arch, n_layers=spec.n_layers, d_ff=spec.d_ff,
                    d_model=spec.d_model, vocab_size=basis_matrix.shape[0],
                    spec_fingerprint=spec.fingerprint, weights_hash=digest,
                    action_token_ids=list(spec.action_token_ids), **asdict(settings))
        atlas = cls(top_ids, top_scores, meta, _vocabulary(adapter, tokenizer, basis_matrix.shape[0]),
                    bottom_ids, bottom_scores)
        if path is not None:
            atlas.save(path)
        return atlas

    # ------------------------------------------------------------------------------- reading
    @property
    def n_layers(self) -> int:
        return self.token_ids.shape[0]

    @property
    def d_ff(self) -> int:
        return self.token_ids.shape[1]

    @property
    def weights_hash(self) -> str:
        return self.meta["weights_hash"]

    def __repr__(self) -> str:
        m = self.meta
        return (f"NeuronAtlas({m['arch']}: {m['n_layers']} layers x {m['d_ff']} neurons onto "
                f"{m['vocab_size']} {m['basis']} tokens, {m['score']}, top-{m['top_k']}, "
                f"weights {m['weights_hash'][:12]})")

    def _check(self, layer: int, neuron: int) -> None:
        if not (isinstance(layer, int) and 0 <= layer < self.n_layers):
            raise ConfigError(f"layer {layer!r} is out of range: the atlas has {self.n_layers} layers")
        if not (isinstance(neuron, int) and 0 <= neuron < self.d_ff):
            raise ConfigError(f"neuron {neuron!r} is out of range: the atlas has {self.d_ff} "
                              f"neurons per layer (0..{self.d_ff - 1})")

    def top(self, layer: int, neuron: int, sign: int = 1) -> tuple[list[int], list[float]]:
        """Token ids and scores of one neuron, most promoted first (``sign=-1``: most suppressed)."""
        self._check(layer, neuron)
        ids, scores = (self.token_ids, self.scores) if sign > 0 else (self.bottom_ids, self.bottom_scores)
        if ids is None:
            raise ConfigError("this atlas kept only the top tokens; build it with both_signs=True")
        return ids[layer, neuron].tolist(), scores[layer, neuron].tolist()

    def tokens(self, layer: int, neuron: int, k: int | None = None, sign: int = 1) -> list[str]:
        """Readable top tokens of one neuron, e.g. ``['slowing', 'slow', 'slowed', ...]``."""
        ids, _ = self.top(layer, neuron, sign)
        return [self.vocab[i] for i in ids[:k]]

    def describe(self, layer: int, neuron: int, k: int = 10) -> str:
        """One line: ``L3 N1021: slowing (0.41), slow (0.39), ...``."""
        ids, scores = self.top(layer, neuron)
        pairs = ", ".join(f"{self.vocab[i]} ({s:.2f})" for i, s in zip(ids[:k], scores[:k]))
        return f"L{layer} N{neuron}: {pairs}"

    @property
    def words(self) -> list[str]:
        """The vocabulary normalised for matching: word-start markers and ``##`` removed, lowercase."""
        if self._words is None:
            self._words = [_normalise(t) for t in self.vocab]
        return self._words

    def token_weights(self, weights: dict[str, float]) -> torch.Tensor:
        """``(vocab,)`` weight of every token whose normalised word is a key of ``weights``."""
        w = torch.zeros(len(self.vocab))
        wanted = {_normalise(k): v for k, v in weights.items()}
        for i, word in enumerate(self.words):
            if word in wanted:
                w[i] = max(w[i].item(), wanted[word])
        return w

    def neuron_scores(self, token_weight: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """``(n_layers, d_ff)`` rank-weighted hits: ``sum_j w(t_j) * (k - j) / k`` over the top-k.

        The token at rank ``j`` (0-based) of a neuron's top-k counts ``(k - j) / k`` times its
        weight, so a neuron whose first token is a concept word outranks one that has it tenth;
        scale-free, so layers with larger value vectors do not dominate.
        """
        k = k or self.token_ids.shape[-1]
        rank = (k - torch.arange(k, dtype=torch.float32)) / k  # (k,)
        return (token_weight[self.token_ids[..., :k].long()] * rank).sum(-1)

    def search(self, query: str | list[str], *, layers: list[int] | None = None, limit: int = 20,
               k: int | None = None) -> list[NeuronHit]:
        """Neurons whose top-k tokens contain the query word(s), best first (rank-weighted hits)."""
        words = [query] if isinstance(query, str) else list(query)
        scores = self.neuron_scores(self.token_weights({w: 1.0 for w in words}), k)
        if layers is not None:
            keep = torch.zeros(self.n_layers, dtype=torch.bool)
            keep[list(layers)] = True
            scores = scores * keep[:, None]
        return self.hits(scores, limit, {_normalise(w) for w in words})

    def hits(self, scores: torch.Tensor, limit: int, words: set[str] | None = None) -> list[NeuronHit]:
        """The ``limit`` best neurons of a ``(n_layers, d_ff)`` score map as :class:`NeuronHit`."""
        flat = scores.flatten()
        n = min(limit, int((flat > 0).sum()))
        best = flat.topk(n)
        out = []
        for value, index in zip(best.values.tolist(), best.indices.tolist()):
            layer, neuron = divmod(index, self.d_ff)
            tokens = tuple(self.tokens(layer, neuron))
            matched = tuple(t for t in tokens if words is None or _normalise(t) in words)
            out.append(NeuronHit(layer, neuron, value, matched, tokens))
        return out

    def action_fraction(self, k: int = 10, threshold: float = 0.5, per_layer: bool = False):
        """Fraction of neurons whose top-``k`` tokens are mostly (``> threshold``) action bins.

        The paper's rewiring metric: how many neurons fine-tuning turned into action writers
        (under 25% in OpenVLA). Returns a float, or a ``(n_layers,)`` tensor with ``per_layer``.
        """
        if not self.meta["action_token_ids"]:
            raise ConfigError(f"{self.meta['arch']} has no action tokens, so no action fraction")
        is_action = torch.zeros(len(self.vocab), dtype=torch.bool)
        is_action[self.meta["action_token_ids"]] = True
        share = is_action[self.token_ids[..., :k].long()].float().mean(-1)  # (L, F)
        mostly = (share > threshold).float()
        return mostly.mean(-1) if per_layer else mostly.mean().item()

    # ------------------------------------------------------------------------ saving/loading
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors: ids and scores) and its ``.json`` sidecar (meta, vocab)."""
        from safetensors.torch import save_file

        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"token_ids": self.token_ids, "scores": self.scores}
        if self.bottom_ids is not None:
            tensors.update(bottom_ids=self.bottom_ids, bottom_scores=self.bottom_scores)
        tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, str(path), metadata={"format": FORMAT, "weights_hash": self.weights_hash})
        path.with_suffix(".json").write_text(json.dumps(dict(self.meta, vocab=self.vocab)))
        return path

    @classmethod
    def load(cls, path: str | Path, *, expect_hash: str | None = None) -> NeuronAtlas:
        """Read an atlas written by :meth:`save`; ``expect_hash`` guards against other weights."""
        from safetensors import safe_open

        path = Path(path).with_suffix(".safetensors")
        sidecar = path.with_suffix(".json")
        if not path.exists() or not sidecar.exists():
            raise CheckpointError(f"no atlas at {path} (needs {path.name} and {sidecar.name})")
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(sidecar.read_text())
        vocab = meta.pop("vocab")
        if header.get("format") != FORMAT or header.get("weights_hash") != meta.get("weights_hash"):
            raise CheckpointError(f"{path.name} and {sidecar.name} do not belong together "
                                  f"(weights {header.get('weights_hash')} vs {meta.get('weights_hash')})")
        if expect_hash is not None and meta["weights_hash"] != expect_hash:
            raise CheckpointError(f"atlas {path} was built from other weights "
                                  f"({meta['weights_hash'][:12]}, expected {expect_hash[:12]})")
        return cls(tensors["token_ids"], tensors["scores"], meta, vocab,
                   tensors.get("bottom_ids"), tensors.get("bottom_scores"))


# ----------------------------------------------------------------------------------- helpers
class _Projector:
    """Top-k of ``values @ basis.T`` per row, chunked through one reused score buffer."""

    def __init__(self, basis: torch.Tensor, settings: AtlasSettings, device, dtype, chunk_size):
        vocab, d = basis.shape
        self.vocab, self.k, self.settings = vocab, settings.top_k, settings
        padded = -(-vocab // _GROUP) * _GROUP
        if padded == vocab and settings.score == "dot":
            self.basis = basis.to(device, dtype)  # no copy when it already fits
        else:
            self.basis = torch.zeros(padded, d, device=device, dtype=dtype)  # zero rows pad the groups
            self.basis[:vocab] = basis.to(device, dtype)
        if settings.score == "cosine":
            self.basis[:vocab] /= self.basis[:vocab].norm(dim=1, keepdim=True).clamp_min(1e-12)
        budget = 512 * 2**20 // (padded * self.basis.element_size())
        self.chunk = chunk_size or max(64, budget)
        self.buffer: torch.Tensor | None = None
        if self.k > vocab:
            raise ConfigError(f"top_k={self.k} exceeds the vocabulary ({vocab})")

    def __call__(self, values: torch.Tensor):
        values = values.to(self.basis.device, self.basis.dtype)  # (F, d)
        if self.settings.score == "cosine":
            values = values / values.norm(dim=1, keepdim=True).clamp_min(1e-12)
        n = values.shape[0]
        rows = -(-n // -(-n // self.chunk))  # equal chunks: 11008 -> 2 x 5504, not 8371 + 2637
        if self.buffer is None or self.buffer.shape[0] < rows:
            self.buffer = torch.empty(rows, self.basis.shape[0], device=self.basis.device, dtype=self.basis.dtype)
        parts = []
        for start in range(0, n, rows):
            chunk = values[start:start + rows]
            scores = self.buffer[: chunk.shape[0]]
            torch.matmul(chunk, self.basis.T, out=scores)  # (c, padded vocab)
            parts.append(self._select(scores))
        # one device -> host copy per layer, so the GPU is never stalled between chunks
        return tuple(torch.cat(p).cpu() if p[0] is not None else None for p in zip(*parts))

    def _select(self, scores: torch.Tensor):
        padded = scores.shape[1] > self.vocab
        if padded:
            scores[:, self.vocab:] = float("-inf")  # the zero rows that pad the last group
        vals, ids = grouped_topk(scores, self.k)
        top = (ids.int(), vals.float())
        if not self.settings.both_signs:
            return (*top, None, None)
        scores.neg_()
        if padded:
            scores[:, self.vocab:] = float("-inf")
        vals, ids = grouped_topk(scores, self.k)
        return (*top, ids.int(), (-vals).float())


def grouped_topk(scores: torch.Tensor, k: int, group: int = _GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``scores.topk(k, dim=1)`` for ``(rows, n)`` with ``n`` a multiple of ``group``.

    The k largest entries of a row lie in the k groups with the largest maxima (any other group's
    maximum is beaten by k group maxima, so all its entries are), so one max-reduction over
    groups plus a top-k over ``k * group`` candidates gives the same values as a full top-k.
    """
    rows, n = scores.shape
    if k * 4 > n // group:  # too few groups for the shortcut to pay off
        return scores.topk(k, dim=1)
    grouped = scores.view(rows, n // group, group)
    best_groups = grouped.amax(-1).topk(k, dim=1).indices  # (rows, k)
    candidates = grouped.gather(1, best_groups[..., None].expand(-1, -1, group)).flatten(1)
    vals, pos = candidates.topk(k, dim=1)  # (rows, k), sorted
    ids = best_groups.gather(1, pos // group) * group + pos % group
    return vals, ids


def _weighted(values: torch.Tensor, gain: torch.Tensor | None) -> torch.Tensor:
    return values if gain is None else values * gain.to(values.device, values.dtype)


def weights_hash(adapter: Adapter, basis: torch.Tensor | None = None,
                 gain: torch.Tensor | None = None) -> str:
    """SHA-256 of every value-vector weight and of the token basis, as stored (hex, 32 chars).

    Each tensor is hashed in its own thread (hashlib releases the GIL; SHA-256 runs on the CPU's
    SHA extensions), then the digests are hashed together. ``gain`` (the final norm's, when the
    atlas is norm-weighted) is hashed too.
    """
    from concurrent.futures import ThreadPoolExecutor

    if basis is None:
        _, basis = adapter.basis("auto")
    tensors = [adapter.module(f"layers.{i}.mlp.post").weight for i in range(adapter.spec.n_layers)]
    tensors += [basis] + ([gain] if gain is not None else [])
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(_digest, tensors))
    return hashlib.sha256(b"".join(digests)).hexdigest()[:32]


def _digest(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().contiguous().cpu()
    h = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().data)
    return h.digest()


def _mismatch(meta: dict, digest: str, settings: AtlasSettings) -> str | None:
    if meta.get("weights_hash") != digest:
        return f"built from weights {meta.get('weights_hash', '?')[:12]}, the model has {digest[:12]}"
    built = AtlasSettings(**{k: meta[k] for k in asdict(settings)})
    return None if built == settings else f"built with {built.key}, asked for {settings.key}"


def _cache_path(cache: str | Path, spec, settings: AtlasSettings) -> Path:
    cache = Path(cache)
    if cache.suffix == ".safetensors":
        return cache
    return cache / f"{spec.arch}-{spec.n_layers}x{spec.d_ff}-{settings.key}.safetensors"


def _vocabulary(adapter: Adapter, tokenizer, size: int) -> list[str]:
    """Readable string of every id: action bins described, else the tokenizer's token."""
    tokenizer = tokenizer if tokenizer is not None else getattr(adapter.model, "tokenizer", None)
    known = len(tokenizer) if tokenizer is not None else 0
    names = tokenizer.convert_ids_to_tokens(list(range(min(known, size)))) if known else []
    names += [f"<{i}>" for i in range(len(names), size)]
    for i in adapter.spec.action_token_ids:
        if i < size:
            names[i] = adapter.describe_token(i) or names[i]
    return [_readable(n) for n in names]


def _readable(token: str) -> str:
    """SentencePiece ``▁`` and byte-BPE ``Ġ`` word starts shown as a space."""
    return token.replace("▁", " ").replace("Ġ", " ")


def _normalise(token: str) -> str:
    return token.strip().removeprefix("##").lower()
