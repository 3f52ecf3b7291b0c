"""Relevance on real MuJoCo renders of the tabletop suite, scored against the simulator's segmentation."""

import numpy as np
import pytest

from arrcoc_steer.regions import CAMERAS
from arrcoc_steer.relevance import pointing_game, query_sensitivity_iou, random_allocation, target_recall

envs = pytest.importorskip("envs")


def scenes(task, n, first_seed=500):
    env = envs.make(task, segmentation=True)
    try:
        return [env.reset(seed=s) for s in range(first_seed, first_seed + n)]
    finally:
        env.close()


def masks(info, name="target"):
    return np.stack([info["segmentation"][c][name] for c in CAMERAS])


@pytest.fixture(scope="module")
def object_scenes():
    return scenes("PickRedBlockIntoTray", 8)


def test_named_block_gets_the_detail_on_renders(allocator, object_scenes):
    recall, chance, hits = [], [], []
    for k, (obs, info) in enumerate(object_scenes):
        for colour in ("red", "blue", "green", "yellow"):
            r = allocator(obs, f"put the {colour} block in the tray", budget=100)
            m = masks(info, f"{colour}_block")
            recall.append(target_recall(r.allocation, m))
            chance.append(target_recall(random_allocation(100, seed=k), m))
            hits.append(pointing_game(r.relevance, m)[0])
    assert np.nanmean(recall) >= 0.9 and np.nanmean(chance) < 0.6
    assert np.nanmean(hits) >= 0.8


def test_query_sensitivity_on_renders(allocator, object_scenes):
    ious = []
    for obs, _ in object_scenes:
        red = allocator(obs, "put the red block in the tray", budget=100).allocation
        blue = allocator(obs, "put the blue block in the tray", budget=100).allocation
        ious.append(query_sensitivity_iou(red, blue))
    assert np.mean(ious) <= 0.5


@pytest.mark.parametrize("task", ["PickLeftBlockIntoTray", "PickRightBlockIntoTray", "PickFrontBlockIntoTray"])
def test_spatial_instructions_pick_the_right_identical_block(allocator, task):
    """Identical orange blocks: the agentview's top region must hold the one the relation names."""
    hits = []
    for obs, info in scenes(task, 6):
        r = allocator(obs, budget=100)
        hits.append(pointing_game(r.relevance, masks(info))[0])
    assert np.nanmean(hits) >= 2 / 3
