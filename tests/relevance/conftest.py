"""Shared fixtures: one allocator (MiniLM embeddings load once) and synthetic tabletop images."""

from __future__ import annotations

import numpy as np
import pytest

from arrcoc_steer.relevance import Grounder, RelevanceAllocator

TABLE = (158, 153, 145)
RED, GREEN, BLUE, YELLOW = (220, 20, 20), (25, 184, 41), (20, 66, 235), (245, 214, 15)
ORANGE, BROWN = (242, 122, 20), (115, 92, 71)  # the spatial suite's blocks, the tray


def scene(*blocks, size: int = 128, background=TABLE, seed: int = 0) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 image: ``blocks`` are ``(rgb, (x, y), side)`` squares on a table
    with mild pixel noise (real renders are never perfectly flat)."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.int16)
    img[:] = background
    img += rng.integers(-3, 4, img.shape, dtype=np.int16)
    for rgb, (x, y), side in blocks:
        img[y : y + side, x : x + side] = rgb
    return np.clip(img, 0, 255).astype(np.uint8)


def pair(agentview: np.ndarray, wrist: np.ndarray | None = None) -> np.ndarray:
    """``(2, S, S, 3)``: the two cameras (a plain table for the wrist when not given)."""
    return np.stack([agentview, scene(seed=1) if wrist is None else wrist])


@pytest.fixture(scope="session")
def grounder() -> Grounder:
    return Grounder()


@pytest.fixture(scope="session")
def allocator(grounder) -> RelevanceAllocator:
    return RelevanceAllocator(grounder=grounder)


@pytest.fixture(scope="session")
def four_blocks() -> np.ndarray:
    """Red top-left, blue bottom-right, green top-right, yellow bottom-left; 12 px blocks."""
    return pair(scene((RED, (10, 12), 12), (BLUE, (100, 98), 12), (GREEN, (104, 10), 12), (YELLOW, (8, 100), 12)))
