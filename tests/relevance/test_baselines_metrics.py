import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.regions import RegionGrid
from arrcoc_steer.relevance import (
    detailed_regions,
    downsample,
    downsample_side,
    pointing_game,
    query_sensitivity_iou,
    random_allocation,
    target_recall,
    uniform_allocation,
)

from .conftest import RED, scene


@pytest.mark.parametrize("budget", [64, 100, 256, 400])
def test_baselines_spend_the_exact_budget(budget):
    for alloc in (uniform_allocation(budget), random_allocation(budget, seed=3)):
        RegionGrid().check_allocation(alloc)
        assert alloc.sum() == budget
    assert uniform_allocation(budget).max() - uniform_allocation(budget).min() <= 1


def test_random_keep_is_seeded_and_varies_with_the_seed():
    np.testing.assert_array_equal(random_allocation(100, seed=1), random_allocation(100, seed=1))
    assert not np.array_equal(random_allocation(100, seed=1), random_allocation(100, seed=2))
    with pytest.raises(ConfigError, match="budget"):
        random_allocation(500)


def test_downsampling_blurs_to_the_budget_resolution():
    img = np.stack([scene((RED, (10, 10), 3)), scene()])
    assert downsample_side(64) < downsample_side(100) < downsample_side(400) <= 128
    low = downsample(img, 64)
    assert low.shape == img.shape and low.dtype == np.uint8
    assert np.abs(low.astype(int) - img).max() > 50  # the 3 px block is smeared
    side = downsample_side(64)
    assert len(np.unique(low[0].reshape(-1, 3), axis=0)) <= side * side


def test_detailed_regions_and_recall():
    alloc = np.ones((2, 16), int)
    alloc[0, 0] = 16  # total 47, uniform share 1.47: only region 0 is detailed
    masks = np.zeros((2, 128, 128), bool)
    masks[0, 0:10, 28:36] = True  # 80 px: 40 in region 0 (x < 32), 40 in region 1
    assert detailed_regions(alloc).sum() == 1
    assert target_recall(alloc, masks) == pytest.approx(0.5)
    alloc[0, 1] = 4
    assert target_recall(alloc, masks) == 1.0
    assert np.isnan(target_recall(alloc, np.zeros((2, 128, 128), bool)))


def test_pointing_game_per_camera():
    masks = np.zeros((2, 128, 128), bool)
    masks[0, 100:110, 100:110] = True  # region 15 of agentview; the wrist does not see it
    rel = np.zeros((2, 16))
    rel[0, 15] = 1.0
    out = pointing_game(rel, masks)
    assert out[0] == 1.0 and np.isnan(out[1])
    rel[0, 14] = 2.0
    assert pointing_game(rel, masks)[0] == 0.0
    with pytest.raises(ConfigError, match="target masks"):
        pointing_game(rel, masks[:, :64])


def test_query_sensitivity_iou():
    a, b = np.ones((2, 16), int), np.ones((2, 16), int)
    a[0, :4] = 10
    b[0, 2:6] = 10
    assert query_sensitivity_iou(a, b) == pytest.approx(2 / 6)
    assert query_sensitivity_iou(a, a) == 1.0
    assert query_sensitivity_iou(np.ones((2, 16), int), np.ones((2, 16), int)) == 1.0  # both empty
