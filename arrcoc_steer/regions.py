"""The region grid shared by the visual encoder and ARR-COC: regions, levels of detail, budgets.

Each camera image is a ``grid x grid`` array of regions; each region is a ``cells x cells`` array of
feature cells (8 x 8 pixels at the default 128 px). A region is encoded with ``n`` tokens,
``1 <= n <= cells**2``: token ``k`` is the mean of the ``k``-th group of a fixed, nested binary
partition of the region's cells (a k-d split: 1 group, then 2 halves, then 4 quadrants, ...). Every
integer level exists, so any total budget between ``n_regions`` and ``n_regions * cells**2`` is
reachable exactly, and a finer level always refines a coarser one.

An *allocation* is an int array ``(n_cameras, grid * grid)`` of tokens per region; its sum is the
visual budget ``B`` (``MIN_BUDGET <= B <= MAX_BUDGET``, the range of DeepSeek-OCR's native modes).

>>> grid = RegionGrid()
>>> alloc = grid.uniform(100)
>>> int(alloc.sum()), alloc.shape
(100, (2, 16))
>>> grid.allocate(np.arange(32.0), 64).sum()
64
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ConfigError

MIN_BUDGET = 64
MAX_BUDGET = 400
CAMERAS = ("agentview", "wrist")


def check_budget(budget: int) -> int:
    """Return ``budget`` as an int or raise ConfigError if it is outside MIN_BUDGET..MAX_BUDGET."""
    if isinstance(budget, bool) or not float(budget).is_integer():
        raise ConfigError(f"budget must be an integer number of visual tokens, got {budget!r}")
    if not MIN_BUDGET <= int(budget) <= MAX_BUDGET:
        raise ConfigError(
            f"budget={budget} is outside the supported range {MIN_BUDGET}..{MAX_BUDGET} visual tokens"
        )
    return int(budget)


def _kd_partitions(cells: int) -> list[list[np.ndarray]]:
    """Nested partitions of a ``cells x cells`` block: entry ``n-1`` has ``n`` groups of cell ids.

    Each step splits the largest group (earliest first) across its longer side.
    """
    ids = np.arange(cells * cells).reshape(cells, cells)
    groups = [ids]
    out = [[g.ravel() for g in groups]]
    while len(groups) < cells * cells:
        i = max(range(len(groups)), key=lambda j: (groups[j].size, -j))
        g = groups.pop(i)
        if g.shape[1] >= g.shape[0]:
            h = g.shape[1] // 2
            a, b = g[:, :h], g[:, h:]
        else:
            h = g.shape[0] // 2
            a, b = g[:h], g[h:]
        groups[i:i] = [a, b]
        out.append([g.ravel() for g in groups])
    return out


@dataclass(frozen=True)
class RegionGrid:
    """Geometry of regions and levels of detail for ``n_cameras`` square images."""

    image_size: int = 128
    grid: int = 4  # regions per image side
    cells: int = 4  # feature cells per region side
    n_cameras: int = len(CAMERAS)

    def __post_init__(self):
        side = self.grid * self.cells
        if self.image_size % side:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of grid*cells={side}")
        if self.cells & (self.cells - 1):
            raise ConfigError(f"cells={self.cells} must be a power of two")

    @property
    def regions_per_camera(self) -> int:
        return self.grid * self.grid

    @property
    def n_regions(self) -> int:
        return self.n_cameras * self.regions_per_camera

    @property
    def max_level(self) -> int:
        return self.cells * self.cells

    @property
    def cell_px(self) -> int:
        return self.image_size // (self.grid * self.cells)

    @property
    def region_px(self) -> int:
        return self.image_size // self.grid

    @cached_property
    def pooling(self) -> list[np.ndarray]:
        """``pooling[n-1]`` is an ``(n, cells**2)`` float32 matrix averaging cells into n tokens."""
        mats = []
        for groups in _kd_partitions(self.cells):
            m = np.zeros((len(groups), self.cells**2), np.float32)
            for k, g in enumerate(groups):
                m[k, g] = 1.0 / len(g)
            mats.append(m)
        return mats

    @cached_property
    def token_geometry(self) -> list[np.ndarray]:
        """``token_geometry[n-1]`` is ``(n, 3)``: centroid (x, y) within the region in [0, 1], and
        log2 of the group size in cells (0 = finest)."""
        yy, xx = np.divmod(np.arange(self.cells**2), self.cells)
        centre = np.stack([(xx + 0.5) / self.cells, (yy + 0.5) / self.cells], 1)
        out = []
        for m in self.pooling:
            size = (m > 0).sum(1, keepdims=True)
            out.append(np.concatenate([m @ centre, np.log2(size)], 1).astype(np.float32))
        return out

    def region_boxes(self) -> np.ndarray:
        """``(regions_per_camera, 4)`` pixel boxes (x0, y0, x1, y1), row-major over the grid."""
        r = np.arange(self.regions_per_camera)
        y0, x0 = np.divmod(r, self.grid)
        s = self.region_px
        return np.stack([x0 * s, y0 * s, (x0 + 1) * s, (y0 + 1) * s], 1)

    def region_means(self, mask: np.ndarray) -> np.ndarray:
        """Mean of an ``(H, W)`` map inside each region -> ``(regions_per_camera,)``."""
        s = self.region_px
        g = self.grid
        return mask.reshape(g, s, g, s).mean(axis=(1, 3)).ravel()

    # -- allocations -------------------------------------------------------------------------
    def check_allocation(self, alloc: np.ndarray) -> np.ndarray:
        alloc = np.asarray(alloc)
        shape = (self.n_cameras, self.regions_per_camera)
        if alloc.shape != shape:
            raise ConfigError(f"allocation must have shape {shape} (cameras, regions), got {alloc.shape}")
        if not np.issubdtype(alloc.dtype, np.integer):
            raise ConfigError(f"allocation must hold integer token counts, got dtype {alloc.dtype}")
        if alloc.min() < 1 or alloc.max() > self.max_level:
            raise ConfigError(
                f"tokens per region must be in 1..{self.max_level}, got {alloc.min()}..{alloc.max()}"
            )
        check_budget(int(alloc.sum()))
        return alloc.astype(np.int64)

    def uniform(self, budget: int) -> np.ndarray:
        """As-equal-as-possible allocation of ``budget`` tokens (extra tokens to the first regions)."""
        return self.allocate(np.zeros(self.n_regions), budget)

    def _water_level(self, w: np.ndarray, budget: int) -> float:
        """The largest ``lam`` with ``sum(clip(lam * w, 1, max_level)) <= budget``, exactly.

        The total is piecewise linear in ``lam`` with kinks at ``1 / w_i`` and ``max_level / w_i``:
        evaluate it at every kink (one small matrix), then solve linearly inside the bracketing piece.
        """
        kinks = np.unique(np.concatenate([1.0 / w, self.max_level / w]))  # (k,) ascending
        totals = np.clip(kinks[:, None] * w[None], 1, self.max_level).sum(1)  # non-decreasing
        i = int(np.searchsorted(totals, budget, side="right"))  # totals[i - 1] <= budget < totals[i]
        if i == len(kinks):
            return float(kinks[-1])
        if i == 0:
            return float(kinks[0])
        lo, hi = kinks[i - 1], kinks[i]
        slope = (totals[i] - totals[i - 1]) / (hi - lo)
        return float(lo + (budget - totals[i - 1]) / slope)

    def allocate(self, weights: np.ndarray, budget: int) -> np.ndarray:
        """Water-filling allocation with an exact total, deterministic and monotone in ``weights``.

        Region ``i`` gets ``clip(lam * softplus-free weight_i, 1, max_level)`` tokens for the ``lam``
        that spends the budget; the fractional remainder goes to the highest weights (ties: lower
        index first). Higher weight never gets fewer tokens. Non-finite weights are rejected.
        """
        budget = check_budget(budget)
        w = np.asarray(weights, np.float64).reshape(-1)
        if w.size != self.n_regions:
            raise ConfigError(f"weights must have {self.n_regions} entries (one per region), got {w.size}")
        if not np.all(np.isfinite(w)):
            raise ConfigError("relevance weights contain NaN or inf")
        w = w - w.min()
        w = w / w.max() if w.max() > 0 else np.ones_like(w)
        w = w + 1e-3  # every region stays addressable by lam
        lam = self._water_level(w, budget)
        tokens = np.floor(np.clip(lam * w, 1, self.max_level) + 1e-9).astype(np.int64)
        order = np.lexsort((np.arange(w.size), -w))  # by weight desc, then index asc
        open_ = order[tokens[order] < self.max_level]  # one extra token each, in that order
        tokens[open_[: budget - int(tokens.sum())]] += 1
        assert tokens.sum() == budget, (tokens.sum(), budget)
        return tokens.reshape(self.n_cameras, self.regions_per_camera)
