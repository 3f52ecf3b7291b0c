"""Concepts: named sets of FFN neurons found from keywords in a :class:`~arrcoc_steer.atlas.NeuronAtlas`.

:func:`find_concept` follows Häon et al. (CoRL 2025, arXiv 2509.00328), which steer a VLA by
neurons whose value vectors promote a concept's words, grouped by semantic alignment:

1. **Keywords -> tokens.** Each keyword must be a vocabulary word (word-start markers and case
   ignored); otherwise :class:`~arrcoc_steer.errors.UnknownNameError` lists the nearest tokens.
2. **Expansion.** Each keyword gets its ``expand`` nearest words by cosine similarity in the input
   embedding (``fast`` -> ``quickly``, ``rapid``, ...), kept if similarity >= ``min_similarity``.
   Token weight ``w(t)`` = 1 for a keyword, its similarity for an expansion word.
3. **Ranking.** A neuron's score is its rank-weighted hits (:meth:`NeuronAtlas.neuron_scores`):
   ``sum_j w(t_j) * (k - j) / k`` over its top-k tokens ``t_0..t_{k-1}``. The ``top_n`` best with
   a positive score form the concept.
4. **Clustering.** Value vectors are compared by cosine; two neurons are linked when each is among
   the other's ``cluster_k`` nearest (mutual kNN) with cosine >= ``cluster_threshold``; the
   connected components are the concept's clusters (neurons writing the same direction).

:func:`find_action_concept` is the same search through a policy's action head rather than its
token basis: neurons ranked by how they actually move the policy's actions, state by state (an
:class:`~arrcoc_steer.readout.ActionReadout`), against what a word asks of each state's action
(:data:`ACTION_MEANINGS`: "fast" = a longer move the way the arm already goes, "up" = a higher lift
where it already rises...).

A :class:`ConceptSet` keeps its provenance (keywords, expansion, scores, layers, the model's layout
and weights hash) and round-trips through YAML, including the paper's flat-index form
(``flat = layer * d_ff + neuron``) so published neuron dictionaries load.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .atlas import NeuronAtlas
from .errors import ConfigError, SteeringError, UnknownNameError
from .models.adapters import Adapter, ModelSpec

if TYPE_CHECKING:
    from .readout import ActionReadout

FORMAT = "arrcoc-concepts/1"


@dataclass(frozen=True)
class ModelRef:
    """Which model a set of neuron indices belongs to (layout, and weights when known)."""

    arch: str
    n_layers: int
    d_ff: int
    weights_hash: str | None = None

    @classmethod
    def of(cls, source: NeuronAtlas | ModelSpec | Adapter | nn.Module) -> ModelRef:
        if isinstance(source, NeuronAtlas):
            m = source.meta
            return cls(m["arch"], m["n_layers"], m["d_ff"], m["weights_hash"])
        spec = source if isinstance(source, ModelSpec) else (
            source.spec if isinstance(source, Adapter) else Adapter(source).spec)
        return cls(spec.arch, spec.n_layers, spec.d_ff)

    def check(self, other: ModelRef, what: str = "concept") -> None:
        """Raise :class:`SteeringError` unless ``other`` has this layout (and weights, if both known)."""
        if (self.n_layers, self.d_ff) != (other.n_layers, other.d_ff):
            raise SteeringError(f"this {what} was built for {self.arch} ({self.n_layers} layers x "
                                f"{self.d_ff} neurons) but the model is {other.arch} ({other.n_layers} "
                                f"x {other.d_ff}); find the concept again in this model's atlas")
        if self.weights_hash and other.weights_hash and self.weights_hash != other.weights_hash:
            raise SteeringError(f"this {what} was built from other weights of {self.arch} "
                                f"({self.weights_hash[:12]} vs {other.weights_hash[:12]})")


@dataclass(frozen=True)
class ConceptSet:
    """A named set of FFN neurons ``(layer, neuron)`` with the provenance of how it was found."""

    name: str
    neurons: tuple[tuple[int, int], ...]
    scores: tuple[float, ...] = ()
    clusters: tuple[tuple[int, ...], ...] = ()  # indices into ``neurons``
    keywords: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    expanded: tuple[tuple[str, float], ...] = ()  # (word, similarity to its keyword)
    model: ModelRef | None = None
    meaning: str = ""  # for concepts found through an action readout: what it asks of the actions

    def __post_init__(self):
        neurons = tuple((int(l), int(n)) for l, n in self.neurons)
        object.__setattr__(self, "neurons", neurons)
        object.__setattr__(self, "scores", tuple(float(s) for s in self.scores))
        object.__setattr__(self, "clusters", tuple(tuple(int(i) for i in c) for c in self.clusters))
        if any(l < 0 or n < 0 for l, n in neurons):
            raise ConfigError(f"concept {self.name!r} has a negative layer or neuron index")
        if len(set(neurons)) != len(neurons):
            raise ConfigError(f"concept {self.name!r} lists a neuron twice")
        if self.scores and len(self.scores) != len(neurons):
            raise ConfigError(f"concept {self.name!r}: {len(self.scores)} scores for {len(neurons)} neurons")
        if self.model is not None:
            for layer, neuron in neurons:
                if layer >= self.model.n_layers or neuron >= self.model.d_ff:
                    raise ConfigError(f"concept {self.name!r}: neuron ({layer}, {neuron}) is outside "
                                      f"{self.model.arch} ({self.model.n_layers} x {self.model.d_ff})")

    def __len__(self) -> int:
        return len(self.neurons)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({l for l, _ in self.neurons}))

    def cluster(self, i: int) -> ConceptSet:
        """The concept restricted to its ``i``-th cluster (largest first)."""
        keep = self.clusters[i]
        return replace(self, name=f"{self.name}/{i}", neurons=tuple(self.neurons[j] for j in keep),
                       scores=tuple(self.scores[j] for j in keep) if self.scores else (),
                       clusters=(tuple(range(len(keep))),))

    def flat(self, d_ff: int | None = None) -> list[int]:
        """The paper's flat indices ``layer * d_ff + neuron``."""
        d_ff = _d_ff(self, d_ff)
        return [l * d_ff + n for l, n in self.neurons]

    def describe(self, atlas: NeuronAtlas | None = None, k: int = 6) -> str:
        lines = [f"{self.name}: {len(self)} neurons in layers {list(self.layers)}"
                 + (f", keywords {list(self.keywords)}" if self.keywords else "")]
        for i, (layer, neuron) in enumerate(self.neurons):
            score = f" {self.scores[i]:.2f}" if self.scores else ""
            tokens = f" {atlas.tokens(layer, neuron, k)}" if atlas is not None else ""
            lines.append(f"  L{layer} N{neuron}{score}{tokens}")
        return "\n".join(lines)

    # -------------------------------------------------------------------------------- YAML
    def to_dict(self, flat: bool = False) -> dict:
        data: dict = {}
        if self.keywords:
            data["keywords"] = list(self.keywords)
        if self.against:
            data["against"] = list(self.against)
        if self.expanded:
            data["expanded"] = {w: round(s, 4) for w, s in self.expanded}
        if self.meaning:
            data["meaning"] = self.meaning
        if flat:
            data["d_ff"] = _d_ff(self, None)
            data["flat"] = self.flat()
        else:
            data["neurons"] = [list(p) for p in self.neurons]
        if self.scores:
            data["scores"] = [round(s, 4) for s in self.scores]
        if self.clusters:
            data["clusters"] = [list(c) for c in self.clusters]
        if self.model is not None:
            data["model"] = {k: v for k, v in vars(self.model).items() if v is not None}
        return data

    @classmethod
    def from_dict(cls, name: str, data, d_ff: int | None = None) -> ConceptSet:
        """Read one concept: a mapping as :meth:`to_dict` writes, or a bare list of neurons.

        A bare list holds ``[layer, neuron]`` pairs or flat ints (the paper's dictionaries);
        flat ints need ``d_ff`` from the entry, the file or the argument.
        """
        if not isinstance(data, Mapping):
            data = {"neurons": data}
        model = ModelRef(**data["model"]) if "model" in data else None
        d_ff = data.get("d_ff", d_ff if d_ff is not None else (model.d_ff if model else None))
        if "flat" in data or any(isinstance(x, int) for x in data.get("neurons", [])):
            flat = data.get("flat", data.get("neurons"))
            if d_ff is None:
                raise ConfigError(f"concept {name!r} lists flat neuron indices; give d_ff (neurons "
                                  f"per layer) in the file or as load_concepts(..., d_ff=...)")
            neurons = [divmod(int(i), int(d_ff)) for i in flat]
        elif "neurons" in data:
            neurons = [tuple(p) for p in data["neurons"]]
        else:
            raise ConfigError(f"concept {name!r} has neither 'neurons' nor 'flat'")
        return cls(name=name, neurons=tuple(neurons), scores=tuple(data.get("scores", ())),
                   clusters=tuple(tuple(c) for c in data.get("clusters", ())),
                   keywords=tuple(data.get("keywords", ())), against=tuple(data.get("against", ())),
                   expanded=tuple((str(w), float(s)) for w, s in data.get("expanded", {}).items()),
                   model=model, meaning=str(data.get("meaning", "")))


def save_concepts(path: str | Path, concepts: Iterable[ConceptSet] | Mapping[str, ConceptSet],
                  flat: bool = False) -> Path:
    """Write concepts as a YAML dictionary (``flat=True``: the paper's flat-index form)."""
    import yaml

    items = concepts.values() if isinstance(concepts, Mapping) else concepts
    doc = {"format": FORMAT, "concepts": {c.name: c.to_dict(flat=flat) for c in items}}
    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100))
    return path


def load_concepts(path: str | Path, d_ff: int | None = None) -> dict[str, ConceptSet]:
    """Read a YAML concept dictionary written by :func:`save_concepts` or in the paper's form.

    Accepted: ``{concepts: {name: entry}}`` or a bare ``{name: entry}`` mapping, where an entry is
    a mapping (``neurons`` or ``flat`` + ``d_ff``) or a plain list of flat ints / pairs.
    A top-level ``d_ff`` applies to every entry.
    """
    import yaml

    doc = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: a concept dictionary is a YAML mapping, got {type(doc).__name__}")
    d_ff = doc.get("d_ff", d_ff)
    entries = doc.get("concepts", {k: v for k, v in doc.items() if k not in ("format", "d_ff")})
    return {name: ConceptSet.from_dict(str(name), entry, d_ff) for name, entry in entries.items()}


def _d_ff(concept: ConceptSet, d_ff: int | None) -> int:
    if d_ff is None and concept.model is None:
        raise ConfigError(f"concept {concept.name!r} has no model layout; give d_ff")
    return d_ff if d_ff is not None else concept.model.d_ff


# ------------------------------------------------------------------------------- discovery
@torch.no_grad()
def find_concept(atlas: NeuronAtlas, keywords: str | Iterable[str], model: nn.Module | Adapter, *,
                 name: str | None = None, against: str | Iterable[str] = (), expand: int = 8,
                 min_similarity: float = 0.4, top_n: int = 20, layers: Iterable[int] | None = None,
                 k: int | None = None, cluster_k: int = 3,
                 cluster_threshold: float | None = None) -> ConceptSet:
    """The ``top_n`` neurons whose top tokens best express ``keywords`` (see the module doc).

    Args:
        atlas: the model's neuron atlas.
        keywords: one word or several (``["fast", "quick"]``); each must be in the vocabulary.
        model: the model the atlas was built from (for its embedding and value vectors).
        name: the concept's name (default: the first keyword).
        against: opposite words (``"slow"`` for ``"fast"``). Embedding neighbours include
            antonyms (``slow`` -> ``faster``); an expansion word closer to an ``against`` word is
            dropped, and tokens of the opposite side count negatively in the score.
        expand: nearest embedding neighbours added per keyword (0 disables expansion).
        min_similarity: cosine floor for an expansion word.
        top_n: neurons kept (those with a positive score).
        layers: restrict to these layers (e.g. the ones a KV-prefix action expert reads).
        k: top tokens per neuron considered (default: all the atlas kept).
        cluster_k, cluster_threshold: mutual-kNN clustering of the chosen value vectors; the
            threshold defaults to ``3 / sqrt(d_model)``, three standard deviations of the cosine
            between random directions.
    """
    adapter = model if isinstance(model, Adapter) else Adapter(model)
    ModelRef.of(atlas).check(ModelRef.of(adapter), what="atlas")
    keywords = (keywords,) if isinstance(keywords, str) else tuple(keywords)
    against = (against,) if isinstance(against, str) else tuple(against)
    if not keywords:
        raise ConfigError("find_concept needs at least one keyword")
    embedding = adapter.embedding()
    pos = _expand(atlas, embedding, keywords, expand, min_similarity, rivals=against)
    neg = _expand(atlas, embedding, against, expand, min_similarity, rivals=keywords)

    weight = atlas.token_weights(pos) - atlas.token_weights(neg)
    scores = atlas.neuron_scores(weight, k)  # (L, F)
    if layers is not None:
        keep = torch.zeros(atlas.n_layers, dtype=torch.bool)
        keep[[adapter.spec.check_layer(l) for l in layers]] = True
        scores = scores * keep[:, None]
    hits = atlas.hits(scores, top_n)
    neurons = tuple(h.flat for h in hits)
    expanded = tuple((w, s) for w, s in sorted(pos.items(), key=lambda kv: -kv[1]) if w not in keywords)
    return ConceptSet(name=name or keywords[0], neurons=neurons, scores=tuple(h.score for h in hits),
                      clusters=_value_clusters(adapter, neurons, cluster_k, cluster_threshold), keywords=keywords,
                      against=against, expanded=expanded, model=ModelRef.of(atlas))


@dataclass(frozen=True)
class ActionMeaning:
    """What a word asks of each state's action, at some action dimensions.

    ``kind``: ``"along"`` asks for more of the state's own action there (a longer move the way the
    arm already goes; ``sign`` -1: a shorter one) and ``"toward"`` for a constant push (+1 on the dims;
    ``sign`` -1: the other way). ``only``: ``"positive"`` or ``"negative"`` restricts "along" to the
    states whose action on the dims has that sign (and asks for no change elsewhere): "up" is a higher
    lift where the arm already rises, not a push up during the descent to the object.
    """

    kind: str
    dims: tuple[int, ...]
    sign: int = 1
    only: str | None = None

    def __post_init__(self):
        if self.kind not in ("along", "toward"):
            raise ConfigError(f"ActionMeaning.kind must be 'along' or 'toward', got {self.kind!r}")
        if self.sign not in (1, -1) or not self.dims:
            raise ConfigError(f"ActionMeaning needs sign +1 or -1 and at least one dim, got {self.sign}, {self.dims}")
        if self.only not in (None, "positive", "negative") or (self.only and self.kind != "along"):
            raise ConfigError(f"ActionMeaning.only must be None, 'positive' or 'negative' (with kind 'along'), "
                              f"got {self.only!r} with {self.kind!r}")  # fmt: skip
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))

    def target(self, actions: torch.Tensor) -> torch.Tensor:
        """``(n_states, p)`` the change this meaning asks of each state's expected action."""
        dims = list(self.dims)
        target = torch.zeros_like(actions)
        if self.kind == "toward":
            target[:, dims] = 1.0
        else:
            own = actions[:, dims]
            if self.only == "positive":
                own = own.clamp_min(0)
            elif self.only == "negative":
                own = own.clamp_max(0)
            target[:, dims] = own
        return self.sign * target

    def describe(self) -> str:
        if self.kind == "toward":
            return f"{'+' if self.sign > 0 else '-'} at action dims {list(self.dims)}"
        where = f", where it is {self.only}" if self.only else ""
        return f"{'more' if self.sign > 0 else 'less'} of the action at dims {list(self.dims)}{where}"


@dataclass(frozen=True, eq=False)
class PromptMeaning:
    """What a prompt modifier means to the policy itself, state by state: the change that appending
    it to the instruction makes to each readout state's expected action (``changes``, ``(n_states,
    p)``, from :func:`~arrcoc_steer.readout.expected_actions` with and without it).

    Where the policy learnt the modifier, this is the behaviour a concept should reproduce without
    the words. It can differ from a word's rule: on MiniVLA "and lift it high" asks for nothing where
    the arm already rises (it rises at full speed either way) and, where the plain policy ends its lift
    and turns to carry, for more rise and no carry yet: its cosine with the "up" rule ("more dz where
    the arm rises") is 0.03, while "slowly" and the "slow" rule agree (0.96).
    """

    modifier: str
    changes: torch.Tensor

    def __post_init__(self):
        changes = torch.as_tensor(self.changes).detach().float().cpu()
        if changes.dim() != 2 or not len(changes) or not torch.isfinite(changes).all():
            raise ConfigError(f"PromptMeaning.changes must be finite (n_states, p), got {tuple(changes.shape)}")
        object.__setattr__(self, "changes", changes)

    def target(self, actions: torch.Tensor) -> torch.Tensor:
        """``changes``, checked to be one per state of ``actions``."""
        if tuple(actions.shape) != tuple(self.changes.shape):
            raise ConfigError(f"{self.describe()}: measured on {tuple(self.changes.shape)} states x dims, the readout "
                              f"has {tuple(actions.shape)}; measure it on the readout's states")  # fmt: skip
        return self.changes

    def describe(self) -> str:
        return f"what {self.modifier!r} does to each state's action"

    def agreement(self, meaning: str | ActionMeaning, actions: torch.Tensor) -> float:
        """Cosine, over all states and dims, between this change and what ``meaning`` (a rule) asks
        of the same states' ``actions``: whether the policy means by the words what the rule says."""
        rule = (action_meaning(meaning) if isinstance(meaning, str) else meaning).target(actions).flatten()
        change = self.target(actions).flatten()
        return float(change @ rule / (change.norm() * rule.norm()).clamp_min(1e-12))


# Action words, in the 7-D convention of MiniVLA and LIBERO: dx dy dz droll dpitch dyaw gripper (+1 closes).
ACTION_MEANINGS = {
    "fast": ActionMeaning("along", (0, 1, 2)),
    "slow": ActionMeaning("along", (0, 1, 2), -1),
    "up": ActionMeaning("along", (2,), only="positive"),
    "down": ActionMeaning("along", (2,), only="negative"),
    "close": ActionMeaning("toward", (6,)),
    "open": ActionMeaning("toward", (6,), -1),
}


def action_meaning(word: str) -> ActionMeaning:
    """The :data:`ACTION_MEANINGS` entry of ``word``, or an error listing the known words."""
    if word not in ACTION_MEANINGS:
        raise UnknownNameError("action meaning", word, ACTION_MEANINGS)
    return ACTION_MEANINGS[word]


@torch.no_grad()
def find_action_concept(readout: ActionReadout, meaning: str | ActionMeaning | PromptMeaning, model: nn.Module | Adapter, *,
                        name: str | None = None, top_n: int = 20, layers: Iterable[int] | None = None,
                        cluster_k: int = 3, cluster_threshold: float | None = None) -> ConceptSet:  # fmt: skip
    """The ``top_n`` neurons whose effects on the actions best match ``meaning``.

    A neuron's score is the cosine, over every state of ``readout`` and every action dimension,
    between the change its activation makes to the expected action (its effects) and the change
    the meaning asks of that state (:meth:`ActionMeaning.target`: zero on the dimensions it does not
    name, so "fast" also asks for a still gripper and no drift of the rotation). Scored per state,
    "fast" means "lengthen this state's move": a fixed push on the bins far from zero (scored on
    averaged logits, as stop 17 did) lengthens the moves the policy is sure of and drifts the others
    (MiniVLA, closed loop: +12% speed at alpha 2, where this score's "fast" gives +30% at 1.5). The
    readout's counterpart of the atlas's cosine score; scale-free, so it says what a neuron does, not
    how far (the strength is the intervention's alpha). Only layers the readout was measured at are
    searched.

    Args:
        readout: the policy's :class:`~arrcoc_steer.readout.ActionReadout`.
        meaning: a key of :data:`ACTION_MEANINGS` ("fast", "slow", "up", ...), an :class:`ActionMeaning`,
            or a :class:`PromptMeaning` measured on the readout's states.
        model: the model the readout was measured on.
        name: the concept's name (default: the meaning's key).
        top_n: neurons kept (those with a positive score).
        layers: restrict to these of the readout's layers.
        cluster_k, cluster_threshold: as in :func:`find_concept`.
    """
    if isinstance(meaning, str):
        name, meaning = name or meaning, action_meaning(meaning)
    adapter = model if isinstance(model, Adapter) else Adapter(model)
    if isinstance(meaning, ActionMeaning) and not 0 <= min(meaning.dims) <= max(meaning.dims) < readout.n_positions:
        raise ConfigError(f"{meaning.describe()}: the readout has {readout.n_positions} action dims "
                          f"(0..{readout.n_positions - 1})")  # fmt: skip
    searched = readout.layers if layers is None else tuple(adapter.spec.check_layer(l) for l in layers)
    missing = sorted(set(searched) - set(readout.layers))
    if missing:
        raise SteeringError(f"the readout was measured at layers {list(readout.layers)}, not {missing}")
    target = meaning.target(readout.actions).flatten()
    if not target.norm() > 0:
        raise ConfigError(f"{meaning.describe()}: no state of the readout asks for it (its target is zero in "
                          f"every state); fit the readout on states where it applies")  # fmt: skip
    target = target / target.norm()
    scores = torch.zeros(adapter.spec.n_layers, adapter.spec.d_ff)
    for layer in searched:
        effects = readout.effects(adapter, layer).flatten(1)  # (F, n_states * p)
        scores[layer] = (effects @ target) / effects.norm(dim=-1).clamp_min(1e-12)
    flat = scores.flatten()
    best = flat.topk(min(top_n, int((flat > 0).sum())))
    neurons = tuple(divmod(int(i), adapter.spec.d_ff) for i in best.indices)
    return ConceptSet(name=name or meaning.describe(), neurons=neurons, scores=tuple(best.values.tolist()),
                      clusters=_value_clusters(adapter, neurons, cluster_k, cluster_threshold),
                      keywords=(name,) if name else (),
                      model=ModelRef.of(adapter), meaning=f"{meaning.describe()}, read through the action head at "
                      f"layers {list(searched)} ({readout.n_states} states)")  # fmt: skip


def _value_clusters(adapter: Adapter, neurons, k: int, threshold: float | None) -> tuple[tuple[int, ...], ...]:
    """:func:`cluster_vectors` of the neurons' value vectors; the threshold defaults to
    ``3 / sqrt(d_model)``, three standard deviations of the cosine between random directions."""
    d = adapter.spec.d_model
    values = torch.stack([adapter.value_vectors(l)[n].float() for l, n in neurons]) if neurons else torch.zeros(0, d)
    return cluster_vectors(values, k, threshold if threshold is not None else 3 / d**0.5)


def cluster_vectors(vectors: torch.Tensor, k: int = 3, threshold: float = 0.2) -> tuple[tuple[int, ...], ...]:
    """Mutual-kNN clusters of ``(n, d)`` vectors by cosine, largest first (singletons included)."""
    n = vectors.shape[0]
    if n == 0:
        return ()
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T  # (n, n)
    cos.fill_diagonal_(-2.0)
    near = cos.topk(min(k, n - 1), dim=1).indices if n > 1 else torch.zeros(1, 0, dtype=torch.long)
    knn = torch.zeros(n, n, dtype=torch.bool)
    knn[torch.arange(n)[:, None], near] = True
    linked = knn & knn.T & (cos >= threshold)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in linked.nonzero().tolist():
        parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return tuple(tuple(g) for g in sorted(groups.values(), key=lambda g: (-len(g), g[0])))


def _keyword_ids(atlas: NeuronAtlas, keyword: str) -> list[int]:
    """Vocabulary ids spelling ``keyword`` (word-start forms first), or an error with the nearest."""
    word = keyword.strip().lower()
    ids = [i for i, w in enumerate(atlas.words) if w == word]
    if not ids:
        words = sorted({w for w in atlas.words if w.isalpha()})
        nearest = difflib.get_close_matches(word, words, n=8, cutoff=0.6)
        raise UnknownNameError("vocabulary word", keyword, nearest or words[:8])
    ids.sort(key=lambda i: atlas.vocab[i].strip().startswith("##"))
    return ids


def _expand(atlas: NeuronAtlas, embedding: torch.Tensor, keywords: tuple[str, ...], n: int,
            floor: float, rivals: tuple[str, ...] = ()) -> dict[str, float]:
    """Weight of each keyword (1) and of its ``n`` nearest words by embedding cosine (the cosine).

    A neighbour at least as close to one of the ``rivals`` as to its keyword is skipped.
    """
    unit = embedding[: len(atlas.vocab)].float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (vocab, d)
    rival_ids = [_keyword_ids(atlas, r)[0] for r in rivals]
    weights = {}
    for keyword in keywords:
        token = _keyword_ids(atlas, keyword)[0]
        weights[atlas.words[token]] = 1.0
        sims = unit @ unit[token]  # (vocab,)
        rival = (unit @ unit[rival_ids].T).amax(1) if rival_ids else torch.full_like(sims, -1.0)
        action = set(atlas.meta.get("action_token_ids", ()))
        taken = 0
        for i in sims.topk(min(len(sims), 20 * n + 20)).indices.tolist() if n > 0 else []:
            word, sim = atlas.words[i], float(sims[i])
            if sim < floor or taken == n:
                break
            if i in action or atlas.vocab[i].startswith("##") or not word.isalpha() \
                    or word in weights or rival[i] >= sim:
                continue
            weights[word] = sim
            taken += 1
    return weights
