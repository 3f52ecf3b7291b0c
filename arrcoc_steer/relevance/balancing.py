"""Opponent processing: three explicit tensions turn the ways of knowing into one relevance map.

Inputs are the within-image maps of knowing.py on any grid ``(n, g, g)`` (the 4 x 4 regions for
budgets, the 16 x 16 cells for figures and token pruning) and each image's grounding strength.
With P propositional, S perspectival, C participatory, D procedural (0 when absent), gC / gD their
evidence strengths, and the three knobs of ``Tensions`` (e, p, f in [0, 1]):

1. exploit vs explore -- what to look at. ``exploit = max(gC * C, gD * D)`` (what the instruction
   and the learned outcomes point at), ``explore = S`` (what stands out bottom-up).
   ``interest = e * exploit + (1 - e) * explore``. Exploit wins a region where
   ``e * exploit > (1 - e) * explore``. An image where the instruction finds nothing (gC = 0) is
   pure exploration at a (1 - e) scale, so a camera that does not see the target yields budget to
   one that does.
2. compress vs particularize -- how much detail a region can use. ``detail = interest * ((1 - p) +
   p * P)``: informative regions keep their interest, flat redundant ones are compressed toward
   (1 - p) of it. Particularize wins where ``P`` is above the image's mean P, compress elsewhere.
3. focus vs diversify -- how the budget spreads. ``focused = m * (detail / m) ** (1 + 2f)`` (m the
   image's max) sharpens the peaks; ``context = (1 - f) * max over the 8 neighbours of focused``
   spreads budget to the surroundings of relevant regions (objects straddle region borders, the
   gripper approaches from a side). ``relevance = max(focused, context)``; focus wins where
   ``focused >= context``.

The dominant way of knowing of a region is the one whose weighted evidence, as it enters the rules
above, is largest: ``e * exploit`` (credited to participatory or procedural, whichever was larger),
``(1 - e) * S`` (perspectival) or ``p * P`` (propositional) -- or, where diversify won, the dominant
way of the neighbour that lent the context; "none" where the relevance is 0.
Every operation is elementwise or a 3 x 3 neighbourhood on arrays, so
the same code runs on regions and cells, for any batch, in tens of microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

WAYS = ("propositional", "perspectival", "participatory", "procedural")
NONE = "none"
TENSIONS = {
    "exploit_vs_explore": ("exploit", "explore"),
    "compress_vs_particularize": ("compress", "particularize"),
    "focus_vs_diversify": ("focus", "diversify"),
}


@dataclass(frozen=True)
class Tensions:
    """The three knobs of opponent processing, each in [0, 1] (module docstring gives the rules)."""

    exploit: float = 0.8
    """exploit vs explore: weight of the instruction (and procedural) evidence against salience."""
    particularize: float = 0.5
    """compress vs particularize: how strongly information content scales a region's relevance."""
    focus: float = 0.7
    """focus vs diversify: sharpening exponent 1 + 2 * focus; neighbours get (1 - focus) of a peak."""

    def __post_init__(self):
        for name in ("exploit", "particularize", "focus"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(f"Tensions.{name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True, eq=False)
class Balance:
    """Result of opponent processing on one grid; every array is ``(n, g, g)``."""

    relevance: np.ndarray  # float, >= 0
    dominant: np.ndarray  # int index into WAYS, -1 = none
    first_pole_won: dict[str, np.ndarray]  # tension -> bool, True where its first pole won
    margins: dict[str, np.ndarray]  # tension -> float, first pole minus second pole


def _neighbour_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max over the 8 neighbours of ``(n, g, g)`` and the (dy, dx) offset it came from."""
    n, g, _ = x.shape
    pad = np.full((n, g + 2, g + 2), -np.inf)
    pad[:, 1:-1, 1:-1] = x
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    shifted = np.stack([pad[:, 1 + dy : 1 + dy + g, 1 + dx : 1 + dx + g] for dy, dx in offsets])
    k = shifted.argmax(0)
    dy, dx = np.array(offsets).T
    return np.take_along_axis(shifted, k[None], 0)[0], dy[k], dx[k]


def balance(maps: dict[str, np.ndarray], strength: dict[str, np.ndarray], tensions: Tensions) -> Balance:
    """Opponent processing of ``maps`` (way -> ``(n, g, g)`` in [0, 1]); ``strength`` way -> ``(n,)``.

    Requires propositional, perspectival and participatory; procedural is optional.
    """
    missing = set(WAYS[:3]) - set(maps)
    if missing:
        raise ConfigError(f"opponent processing needs the maps {sorted(missing)}; got {sorted(maps)}")
    e, p, f = tensions.exploit, tensions.particularize, tensions.focus
    P, S, C = (np.asarray(maps[w], np.float64) for w in WAYS[:3])  # (n, g, g)
    gain = lambda w: np.asarray(strength.get(w, np.ones(len(P))), np.float64)[:, None, None]
    exploit = gain("participatory") * C
    source = np.full(P.shape, WAYS.index("participatory"))
    if "procedural" in maps:
        D = gain("procedural") * np.asarray(maps["procedural"], np.float64)
        source = np.where(D > exploit, WAYS.index("procedural"), source)
        exploit = np.maximum(exploit, D)

    # 1. exploit vs explore
    interest = e * exploit + (1 - e) * S
    margin_ee = e * exploit - (1 - e) * S
    # 2. compress vs particularize
    detail = interest * ((1 - p) + p * P)
    margin_cp = P.mean((1, 2), keepdims=True) - P  # > 0: below-average information -> compress
    # 3. focus vs diversify
    top = detail.max((1, 2), keepdims=True)
    focused = np.where(top > 0, top * (detail / np.where(top > 0, top, 1)) ** (1 + 2 * f), 0.0)
    neighbour, dy, dx = _neighbour_max(focused)
    context = (1 - f) * neighbour
    relevance = np.maximum(focused, context)
    margin_fd = focused - context

    # dominance: the largest weighted evidence, borrowed from the neighbour where diversify won
    contributions = np.stack([p * P, (1 - e) * S, e * exploit])
    own = np.array([0, 1, 2])[contributions.argmax(0)]
    own = np.where(own == 2, source, own)
    own = np.where(contributions.max(0) > 0, own, -1)
    n, g, _ = P.shape
    ii, yy, xx = np.meshgrid(np.arange(n), np.arange(g), np.arange(g), indexing="ij")
    lent = own[ii, np.clip(yy + dy, 0, g - 1), np.clip(xx + dx, 0, g - 1)]
    dominant = np.where(margin_fd >= 0, own, lent)
    dominant = np.where(relevance > 0, dominant, -1)

    margins = {"exploit_vs_explore": margin_ee, "compress_vs_particularize": margin_cp, "focus_vs_diversify": margin_fd}
    won = {
        "exploit_vs_explore": margin_ee > 0,
        "compress_vs_particularize": margin_cp >= 0,
        "focus_vs_diversify": margin_fd >= 0,
    }
    return Balance(relevance, dominant, won, margins)
