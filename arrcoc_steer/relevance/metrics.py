"""Allocation quality against simulator segmentation: target recall, pointing game, query sensitivity.

* ``detailed_regions(allocation)`` -- regions given more than the uniform share ``B / n_regions``.
* ``target_recall(allocation, target_masks)`` -- fraction of the target mask's pixels (over every
  camera) that lie in detailed regions. Issue 5's target: >= 0.9 at B = 100.
* ``pointing_game(relevance, target_masks)`` -- per camera, 1.0 if the camera's top-relevance region
  holds a target pixel, 0.0 if not, NaN where the camera does not see the target.
* ``query_sensitivity_iou(a, b)`` -- IoU of the detailed-region sets of two allocations of one
  observation under two instructions naming different objects (target <= 0.5; the public prototype
  measures ~0.93). 1.0 when both sets are empty.

>>> a = np.full((2, 16), 2); a[0, :4] = 15  # 64 + 4 * 13 = 116 tokens, uniform share 3.6
>>> int(detailed_regions(a).sum())
4
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..regions import RegionGrid


def detailed_regions(allocation: np.ndarray) -> np.ndarray:
    """Bool, same shape: tokens above the uniform share of the allocation's own total."""
    a = np.asarray(allocation)
    return a > a.sum() / a.size


def _region_pixels(masks: np.ndarray, grid: RegionGrid) -> np.ndarray:
    """``(n, S, S)`` bool -> ``(n, R)`` pixel counts per region."""
    m = np.asarray(masks, bool)
    s = grid.image_size
    if m.ndim != 3 or m.shape[1:] != (s, s):
        raise ConfigError(f"target masks must be (n_cameras, {s}, {s}), got {m.shape}")
    n, g, r = m.shape[0], grid.grid, grid.region_px
    return m.reshape(n, g, r, g, r).sum((2, 4)).reshape(n, g * g)


def target_recall(allocation: np.ndarray, target_masks: np.ndarray, grid: RegionGrid | None = None) -> float:
    """Fraction of target pixels inside detailed regions; NaN if no camera sees the target."""
    pixels = _region_pixels(target_masks, grid or RegionGrid())
    total = pixels.sum()
    return float((pixels * detailed_regions(allocation)).sum() / total) if total else float("nan")


def pointing_game(relevance: np.ndarray, target_masks: np.ndarray, grid: RegionGrid | None = None) -> np.ndarray:
    """``(n_cameras,)``: does each camera's top-relevance region contain the target (NaN: not seen)."""
    pixels = _region_pixels(target_masks, grid or RegionGrid())
    rel = np.asarray(relevance, float).reshape(pixels.shape)
    top = rel.argmax(1)
    hit = (pixels[np.arange(len(top)), top] > 0).astype(float)
    return np.where(pixels.sum(1) > 0, hit, np.nan)


def query_sensitivity_iou(allocation_a: np.ndarray, allocation_b: np.ndarray) -> float:
    """IoU of the detailed-region sets of two allocations (1.0 when both are empty)."""
    a, b = detailed_regions(allocation_a), detailed_regions(allocation_b)
    if a.shape != b.shape:
        raise ConfigError(f"allocations differ in shape: {a.shape} vs {b.shape}")
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0
