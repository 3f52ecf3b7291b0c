"""RegionGrid.allocate solves the water level exactly; it must match the original bisection."""

import numpy as np
import pytest

from arrcoc_steer.regions import RegionGrid


def bisection_reference(grid: RegionGrid, weights, budget) -> np.ndarray:
    """The original implementation (60-step bisection on lam, remainder by a Python loop)."""
    w = np.asarray(weights, np.float64).reshape(-1)
    w = w - w.min()
    w = w / w.max() if w.max() > 0 else np.ones_like(w)
    w = w + 1e-3
    lo, hi = 0.0, float(grid.max_level) / w.min()
    for _ in range(60):
        lam = 0.5 * (lo + hi)
        if np.clip(lam * w, 1, grid.max_level).sum() > budget:
            hi = lam
        else:
            lo = lam
    tokens = np.floor(np.clip(lo * w, 1, grid.max_level) + 1e-9).astype(np.int64)
    for i in np.lexsort((np.arange(w.size), -w)):
        if tokens.sum() >= budget:
            break
        if tokens[i] < grid.max_level:
            tokens[i] += 1
    return tokens.reshape(grid.n_cameras, grid.regions_per_camera)


@pytest.mark.parametrize("kind", ["uniform", "ties", "sparse", "peaked", "zeros"])
def test_exact_water_level_matches_the_bisection(kind):
    grid, rng = RegionGrid(), np.random.default_rng(0)
    for trial in range(60):
        w = {
            "uniform": rng.random(32),
            "ties": rng.integers(0, 4, 32).astype(float),
            "sparse": (rng.random(32) < 0.15) * rng.random(32),
            "peaked": rng.random(32) ** 8,
            "zeros": np.zeros(32),
        }[kind]
        budget = int(rng.integers(64, 401))
        np.testing.assert_array_equal(grid.allocate(w, budget), bisection_reference(grid, w, budget))
