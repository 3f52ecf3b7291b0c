"""The allocations ARR-COC is compared against (the token-pruning literature's baselines).

* ``uniform_allocation(budget)`` -- uniform pooling: every region gets ``budget / n_regions`` tokens
  (``RegionGrid.uniform``: the remainder goes to the first regions).
* ``random_allocation(budget, seed)`` -- random keep: beyond the one token every region needs, each
  of the ``n_regions * (max_level - 1)`` finer tokens is kept with equal probability, exactly
  ``budget - n_regions`` of them (sampling without replacement, seeded). A strong baseline.
* ``downsample(images, budget)`` + ``uniform_allocation`` -- whole-image downsampling. The region
  grid cannot express a coarser image by itself (each region's tokens pool its own full-resolution
  cells), so the baseline blurs the pixels: each camera image is area-downsampled to the side a
  regular grid of ``budget / n_cameras`` tokens would cover (``sqrt(budget / n_cameras)`` tokens of
  ``cell_px`` pixels per side, e.g. 56 px for B = 100), resized back to full size (nearest), and
  encoded with the uniform allocation. The encoder then sees exactly the detail a whole-image
  downsampling to B tokens keeps.

>>> int(random_allocation(100, seed=0).sum()), int(uniform_allocation(64).max())
(100, 2)
"""

from __future__ import annotations

import numpy as np

from ..regions import RegionGrid, check_budget


def uniform_allocation(budget: int, grid: RegionGrid | None = None) -> np.ndarray:
    """Uniform pooling: ``(n_cameras, R)`` with every region at ``budget / n_regions`` tokens."""
    return (grid or RegionGrid()).uniform(budget)


def random_allocation(budget: int, seed: int | np.random.Generator = 0, grid: RegionGrid | None = None) -> np.ndarray:
    """Random keep with an exact total: ``budget - n_regions`` finer tokens drawn without replacement."""
    grid = grid or RegionGrid()
    budget = check_budget(budget)
    rng = np.random.default_rng(seed)
    extra = grid.max_level - 1  # finer tokens a region can add to its one coarse token
    kept = rng.choice(grid.n_regions * extra, size=budget - grid.n_regions, replace=False)
    tokens = 1 + np.bincount(kept // extra, minlength=grid.n_regions)
    return tokens.reshape(grid.n_cameras, grid.regions_per_camera)


def downsample_side(budget: int, grid: RegionGrid | None = None) -> int:
    """Pixel side of each camera image under whole-image downsampling to ``budget`` tokens."""
    grid = grid or RegionGrid()
    tokens_per_side = np.sqrt(check_budget(budget) / grid.n_cameras)
    return int(min(grid.image_size, max(1, round(tokens_per_side * grid.cell_px))))


def downsample(images: np.ndarray, budget: int, grid: RegionGrid | None = None) -> np.ndarray:
    """Whole-image downsampling: ``(n, S, S, 3)`` uint8 area-downsampled to ``downsample_side`` and
    resized back to S (nearest), same shape and dtype."""
    grid = grid or RegionGrid()
    images = np.asarray(images)
    s, side = images.shape[1], downsample_side(budget, grid)
    edges = np.linspace(0, s, side + 1).round().astype(int)
    small = np.add.reduceat(np.add.reduceat(images.astype(np.float64), edges[:-1], 1), edges[:-1], 2)
    sizes = np.diff(edges)
    small /= sizes[None, :, None, None] * sizes[None, None, :, None]
    back = np.repeat(np.arange(side), sizes)  # nearest: output pixel -> small pixel
    return small[:, back][:, :, back].round().astype(images.dtype)
