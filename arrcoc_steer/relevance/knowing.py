"""Ways of knowing: per-image relevance maps over the region grid (ARR-COC after Vervaeke's 4 Ps).

Every way of knowing maps a batch of images ``(n, S, S, 3)`` uint8 to a ``KnowingMap``: region scores
``(n, R)`` (R = grid**2, 16 by default) and a finer cell map ``(n, G, G)`` (G = grid * cells, 16 by
default, 8 x 8 px cells), both in [0, 1] and normalised *within each image*: a raw map is divided by
``max(its max, floor)``, so an image's scores never depend on the other images of a batch, a blank
image stays at 0 instead of amplifying noise, and ``strength = min(1, max / floor)`` says how much
evidence the image holds.

* propositional -- information content from the pixels alone, no position prior: entropy (bits) of
  a colour-name histogram plus entropy of a gradient-orientation histogram (4 unsigned orientations
  + a "flat" bin for pixels under the edge threshold), per cell; a region scores the mean of its
  pooled histogram's entropy and its most informative cell's (a small object in a flat region is
  detail to particularize even if it barely moves the pooled entropy). Floor 1 bit.
* perspectival -- salience: centre-surround contrast of the cell's mean opponent colour (L, R-G,
  B-Y) against its 5 x 5-cell neighbourhood and against the image mean (half each), plus the
  cell's mean gradient magnitude (Itti-Koch style). Region = (mean + max) / 2 of its cells. Floor 0.1.
* participatory -- coupling of instruction and region in the shared space of colour names (see
  grounding.py). Per palette colour, the fraction of a cell's pixels with that colour name is
  divided by max(the colour's largest fraction in the image, floor) -- per region (floor 0.03: a
  block covering 3% of a region, 30 px, is full evidence) for the region map, per cell (floor 0.25)
  for the cell map -- so a big tray does not swamp a small block. The query's colour weights turn
  this into one map per role, combined by the strongest role:
  ``max(1.0 * target * spatial prior, 0.5 * destination, 0.5 * anchor)`` while reaching, and
  ``max(0.25 * target * prior, 1.0 * destination, 0.5 * anchor)`` once the target is held (phase.py);
  a region is the mean of its cells. The spatial prior for "left" (and right / front / back): among cells matching at
  least half as well as the best, the object (8-connected cells) holding the extreme one keeps
  weight 1; every other cell is weighted ``min(1, exp(-(coord - e) / sigma))``, e the chosen
  object's far edge along the relation, sigma = 1.5 cells: objects a block-width beyond it drop to
  ~25%. "near X": coord = distance to X's (evidence-weighted) centroid.
* procedural (optional) -- ``OcclusionSensitivity``: how far a policy's action moves when a region
  is replaced by the image's mean colour (one policy call per region, so for analysis, not per step).

All pixel work happens once, in ``ImageStats.compute``: one colour look-up table, two gradients, two
``np.bincount`` histograms and two ``np.add.reduceat`` poolings over the whole batch (no Python loop
over regions or pixels, no BLAS call); the maps then work on 16 x 16 cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from scipy.ndimage import label, uniform_filter

from ..errors import ConfigError
from ..regions import CAMERAS, RegionGrid
from .grounding import Palette, Query
from .phase import ROLE_WEIGHTS, check_phase

EDGE_THRESHOLD = 0.04  # luminance step (0..1) per pixel below which a pixel counts as flat
N_ORIENT = 5  # 4 unsigned orientations + flat
SPATIAL_SIGMA = 1.5  # cells


@dataclass(frozen=True, eq=False)
class KnowingMap:
    """One way of knowing on a batch: region scores, cell scores, per-image evidence strength."""

    name: str
    regions: np.ndarray  # (n, R) in [0, 1]
    cells: np.ndarray  # (n, G, G) in [0, 1]
    strength: np.ndarray  # (n,) in [0, 1]


def check_images(images: np.ndarray, grid: RegionGrid) -> np.ndarray:
    """Return ``images`` as ``(n, S, S, 3)`` uint8 or raise ConfigError saying what is expected."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    s = grid.image_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
        raise ConfigError(f"images must be (n, {s}, {s}, 3) or ({s}, {s}, 3) RGB, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ConfigError(f"images must be uint8 RGB (0..255), got dtype {images.dtype}")
    return images


@lru_cache(maxsize=16)
def _cell_ids(n: int, size: int, cell_px: int) -> np.ndarray:
    """``(n, size, size)`` int64: flat cell index ``(i * G + y // c) * G + x // c`` of each pixel."""
    g = size // cell_px
    row = np.arange(size) // cell_px
    ids = (np.arange(n)[:, None, None] * g + row[None, :, None]) * g + row[None, None, :]
    ids.setflags(write=False)
    return ids


def _pool(x: np.ndarray, cell_px: int) -> np.ndarray:
    """Mean of ``(n, S, S, ...)`` over cell_px x cell_px cells -> ``(n, G, G, ...)``.

    ``np.add.reduceat`` over both axes: no BLAS call, which threads badly on a shared 2-core machine.
    """
    starts = np.arange(0, x.shape[1], cell_px)
    return np.add.reduceat(np.add.reduceat(x, starts, axis=2), starts, axis=1) * (1.0 / cell_px**2)


def _to_regions(cells: np.ndarray, grid: RegionGrid) -> np.ndarray:
    """Sum ``(n, G, G, ...)`` cell statistics into ``(n, R, ...)`` region statistics."""
    n, g, c = cells.shape[0], grid.grid, grid.cells
    return cells.reshape(n, g, c, g, c, *cells.shape[3:]).sum((2, 4)).reshape(n, g * g, *cells.shape[3:])


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Entropy in bits along the last axis of a count array (0 for empty rows)."""
    total = counts.sum(-1, keepdims=True)
    p = counts / np.maximum(total, 1)
    return 0.0 - (p * np.log2(np.where(p > 0, p, 1))).sum(-1)  # 0.0 - x: no negative zeros


def _normalise(name: str, regions: np.ndarray, cells: np.ndarray, floor: float) -> KnowingMap:
    """Divide each image's maps by max(own max, floor): the within-image normalisation."""
    top = regions.max(1)
    scale = np.maximum(top, floor)
    cell_scale = np.maximum(cells.max((1, 2)), floor)
    return KnowingMap(
        name,
        (regions / scale[:, None]).astype(np.float32),
        (cells / cell_scale[:, None, None]).astype(np.float32),
        np.minimum(top / floor, 1.0).astype(np.float32),
    )


@dataclass(frozen=True, eq=False)
class ImageStats:
    """Per-cell statistics of a batch, shared by every way of knowing (one pass over the pixels)."""

    grid: RegionGrid
    names: np.ndarray  # (n, G, G, K) pixel counts per palette colour
    orient: np.ndarray  # (n, G, G, 5) pixel counts per gradient orientation (last bin: flat)
    edge: np.ndarray  # (n, G, G) mean gradient magnitude, luminance units per pixel
    colour: np.ndarray  # (n, G, G, 3) mean opponent colour (L, R-G, B-Y), 0..1 units

    @classmethod
    def compute(cls, images: np.ndarray, grid: RegionGrid, palette: Palette) -> ImageStats:
        images = check_images(images, grid)
        n, s, c = images.shape[0], grid.image_size, grid.cell_px
        g, k = s // c, len(palette.names)
        ids = _cell_ids(n, s, c)  # (n, S, S)
        names = np.bincount((ids * k + palette.label(images)).ravel(), minlength=n * g * g * k)

        rgb = images.astype(np.float32) * (1 / 255)  # (n, S, S, 3)
        lum = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]  # (n, S, S)
        gx = np.zeros_like(lum)
        gy = np.zeros_like(lum)
        gx[:, :, 1:-1] = 0.5 * (lum[:, :, 2:] - lum[:, :, :-2])
        gy[:, 1:-1] = 0.5 * (lum[:, 2:] - lum[:, :-2])
        ax, ay = np.abs(gx), np.abs(gy)
        mag = ax + ay
        # unsigned orientation without arctan: 0 horizontal gradient, 2 vertical, 1 / 3 the diagonals
        steep, shallow = ay > 2.414 * ax, 2.414 * ay < ax
        orient = 2 * steep + (~steep & ~shallow) * (1 + 2 * (gx * gy < 0))
        orient[mag < EDGE_THRESHOLD] = N_ORIENT - 1  # the flat bin
        orient = np.bincount((ids * N_ORIENT + orient).ravel(), minlength=n * g * g * N_ORIENT)

        mean_rgb = _pool(rgb, c)  # (n, G, G, 3)
        r, gg, b = mean_rgb[..., 0], mean_rgb[..., 1], mean_rgb[..., 2]
        opponent = np.stack([(r + gg + b) / 3, r - gg, b - 0.5 * (r + gg)], -1)
        return cls(
            grid,
            names.reshape(n, g, g, k),
            orient.reshape(n, g, g, N_ORIENT),
            _pool(mag, c),
            opponent,
        )

    @property
    def n(self) -> int:
        return self.names.shape[0]


# -- the ways of knowing ---------------------------------------------------------------------------


def propositional(stats: ImageStats, floor: float = 1.0) -> KnowingMap:
    """Information content: colour-name entropy + orientation entropy, in bits (module docstring)."""
    grid = stats.grid
    pooled = _entropy(_to_regions(stats.names, grid)) + _entropy(_to_regions(stats.orient, grid))  # (n, R)
    cells = _entropy(stats.names) + _entropy(stats.orient)  # (n, G, G)
    n, g, c = stats.n, grid.grid, grid.cells
    best_cell = cells.reshape(n, g, c, g, c).max((2, 4)).reshape(n, g * g)
    return _normalise("propositional", 0.5 * (pooled + best_cell), cells, floor)


def perspectival(stats: ImageStats, floor: float = 0.1, edge_weight: float = 1.0) -> KnowingMap:
    """Salience: centre-surround opponent-colour contrast plus edge density (module docstring)."""
    col = stats.colour  # (n, G, G, 3)
    local = uniform_filter(col, size=(1, 5, 5, 1), mode="nearest")
    glob = col.mean((1, 2), keepdims=True)
    contrast = 0.5 * np.linalg.norm(col - local, axis=-1) + 0.5 * np.linalg.norm(col - glob, axis=-1)
    cells = contrast + edge_weight * stats.edge  # (n, G, G)
    n, g, c = stats.n, stats.grid.grid, stats.grid.cells
    blocks = cells.reshape(n, g, c, g, c).transpose(0, 1, 3, 2, 4).reshape(n, g * g, c * c)
    regions = 0.5 * (blocks.mean(-1) + blocks.max(-1))
    return _normalise("perspectival", regions, cells, floor)


def participatory(
    stats: ImageStats, query: Query, floor: float = 0.03, cell_floor: float = 0.25, phase: str = "reach"
) -> KnowingMap:
    """Instruction-region coupling through colour names, with the query's spatial prior.

    Each palette colour's pixel fraction is divided by max(its largest fraction in the image, floor)
    -- per region for the region map, per cell (floor 0.25) for the cell map -- so a large tray does
    not swamp a small block; roles combine by the phase's ROLE_WEIGHTS (phase.py), each pixel under
    its strongest role.
    """
    roles = ROLE_WEIGHTS[check_phase(phase)]
    grid = stats.grid
    frac = stats.names / float(grid.cell_px**2)  # (n, G, G, K)
    region_scale = np.maximum(_to_regions(frac, grid).max(1) / grid.cells**2, floor)[:, None, None]  # (n, 1, 1, K)
    cell_scale = np.maximum(frac.max((1, 2), keepdims=True), cell_floor)
    fine = frac / cell_scale
    prior = spatial_prior(fine @ query.target, fine @ query.anchor, query.relation)  # (n, G, G)
    cells = _coupling(fine, query, prior, roles)
    regions = _to_regions(_coupling(frac / region_scale, query, prior, roles), grid) / grid.cells**2
    return _normalise("participatory", regions, cells, 1.0)


def _coupling(evidence: np.ndarray, query: Query, prior: np.ndarray, roles: dict[str, float]) -> np.ndarray:
    """``(n, G, G, K)`` colour evidence -> ``(n, G, G)``: max over roles of weight x role evidence."""
    target = roles["target"] * prior * (evidence @ query.target)
    others = [roles[r] * (evidence @ getattr(query, r)) for r in ("destination", "anchor")]
    return np.maximum.reduce([target, *others])


_EIGHT_CONNECTED = np.zeros((3, 3, 3), bool)  # cells touch within an image, never across the batch
_EIGHT_CONNECTED[1] = True


def spatial_prior(match: np.ndarray, anchor: np.ndarray, relation: str | None, sigma: float = SPATIAL_SIGMA):
    """``(n, G, G)`` weights in (0, 1] favouring the extreme matching object (module docstring)."""
    if relation is None:
        return np.ones_like(match)
    n, g, _ = match.shape
    yy, xx = np.mgrid[0:g, 0:g].astype(np.float64) + 0.5
    if relation == "near":
        mass = anchor.sum((1, 2))  # (n,)
        cy = (anchor * yy).sum((1, 2)) / np.maximum(mass, 1e-9)
        cx = (anchor * xx).sum((1, 2)) / np.maximum(mass, 1e-9)
        coord = np.hypot(yy - cy[:, None, None], xx - cx[:, None, None])  # (n, G, G)
        coord[mass <= 0] = 0.0  # anchor not visible in this image: no prior
    else:
        coord = np.broadcast_to({"left": xx, "right": -xx, "back": yy, "front": -yy}[relation], match.shape)
    candidate = (match > 0) & (match >= 0.5 * match.max((1, 2), keepdims=True))
    objects, _ = label(candidate, structure=_EIGHT_CONNECTED)  # (n, G, G) object id per cell, 0 = none
    ranked = np.where(candidate, coord, np.inf).reshape(n, -1)
    chosen = objects.reshape(n, -1)[np.arange(n), ranked.argmin(1)]  # object holding the extreme cell
    inside = (objects == chosen[:, None, None]) & (chosen[:, None, None] > 0)
    far_side = np.where(inside, coord, -np.inf).max((1, 2), keepdims=True)  # the object's far edge
    far_side = np.where(np.isfinite(far_side), far_side, 0.0)
    return np.where(inside, 1.0, np.minimum(1.0, np.exp(-(coord - far_side) / sigma)))


# -- procedural: learned from outcomes -----------------------------------------------------------


class ActsOnAllocation(Protocol):
    """The tiny policy protocol the procedural way of knowing needs."""

    def predict_action(self, obs: dict[str, Any], instruction: str, *, allocation: np.ndarray) -> np.ndarray: ...


class OcclusionSensitivity:
    """Procedural knowing: ``||a(occluded r) - a||`` for each region r, normalised per camera.

    Costs ``1 + n_regions`` policy calls per observation: use it for analysis and figures, or refresh
    it every few control steps. Region maps are broadcast to cells (no finer resolution).
    """

    name = "procedural"

    def __init__(self, policy: ActsOnAllocation, grid: RegionGrid | None = None, budget: int = 100, floor=1e-3):
        self.policy, self.grid, self.floor = policy, grid or RegionGrid(), floor
        self.allocation = self.grid.uniform(budget)

    def __call__(self, obs: dict[str, Any], instruction: str, cameras=CAMERAS) -> KnowingMap:
        grid = self.grid
        act = lambda o: np.asarray(self.policy.predict_action(o, instruction, allocation=self.allocation), float)
        base = act(obs)
        raw = np.zeros((len(cameras), grid.regions_per_camera))
        for i, cam in enumerate(cameras):
            image = np.asarray(obs[cam])
            fill = image.reshape(-1, 3).mean(0).astype(image.dtype)
            for r, (x0, y0, x1, y1) in enumerate(grid.region_boxes()):
                occluded = image.copy()
                occluded[y0:y1, x0:x1] = fill
                raw[i, r] = np.linalg.norm(act({**obs, cam: occluded}) - base)
        g, c = grid.grid, grid.cells
        cells = np.repeat(np.repeat(raw.reshape(-1, g, g), c, 1), c, 2)
        return _normalise(self.name, raw, cells, self.floor)
