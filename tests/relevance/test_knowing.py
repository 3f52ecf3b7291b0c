import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.regions import RegionGrid
from arrcoc_steer.relevance import ImageStats, OcclusionSensitivity, Palette, participatory, perspectival, propositional

from .conftest import BLUE, BROWN, ORANGE, RED, pair, scene

GRID = RegionGrid()


def maps(images, query):
    stats = ImageStats.compute(images, GRID, Palette.default())
    return [propositional(stats), perspectival(stats), participatory(stats, query)]


def test_maps_have_shapes_and_range(grounder, four_blocks):
    for m in maps(four_blocks, grounder.query("lift the red block")):
        assert m.regions.shape == (2, 16) and m.cells.shape == (2, 16, 16) and m.strength.shape == (2,)
        for a in (m.regions, m.cells, m.strength):
            assert np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 1


def test_adding_an_image_to_the_batch_changes_nothing(grounder, four_blocks):
    q = grounder.query("lift the red block")
    other = scene((BLUE, (40, 40), 40), (RED, (0, 0), 30), seed=5)[None]
    alone, batched = maps(four_blocks, q), maps(np.concatenate([four_blocks, other]), q)
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a.regions, b.regions[:2])
        np.testing.assert_array_equal(a.cells, b.cells[:2])
        np.testing.assert_array_equal(a.strength, b.strength[:2])


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_is_all_zero(grounder, value):
    blank = np.full((1, 128, 128, 3), value, np.uint8)
    for m in maps(blank, grounder.query("lift the red block")):
        assert not m.regions.any() and not m.cells.any() and not m.strength.any()


def test_propositional_has_no_position_prior(grounder):
    """The same content in another region gets the same score (block aligned to the region grid)."""
    a = maps(scene((RED, (36, 36), 16))[None], grounder.query(""))[0].regions[0]
    b = maps(scene((RED, (100, 100), 16))[None], grounder.query(""))[0].regions[0]
    assert a[5] == pytest.approx(b[15]) and a.argmax() == 5 and b.argmax() == 15


def test_perspectival_finds_the_odd_one_out(grounder):
    img = scene((ORANGE, (70, 40), 12))[None]
    s = maps(img, grounder.query(""))[1]
    assert s.regions[0].argmax() == 6 and s.regions[0][6] == 1.0


@pytest.mark.parametrize("colour, region", [("red", 0), ("blue", 15), ("green", 3), ("yellow", 12)])
def test_participatory_points_at_the_named_block(grounder, four_blocks, colour, region):
    c = maps(four_blocks, grounder.query(f"put the {colour} block in the tray"))[2]
    assert c.regions[0].argmax() == region and c.strength[0] == 1.0
    assert c.strength[1] == 0.0  # the wrist image (plain table) holds no evidence


def test_destination_counts_half_and_does_not_swamp_a_small_target(grounder):
    img = scene((BROWN, (64, 64), 64), (RED, (10, 10), 8))[None]  # big tray, small block
    c = maps(img, grounder.query("put the red block in the tray"))[2].regions[0]
    assert c[0] == 1.0 and c[15] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "text, layout, chosen, other",
    [("pick up the block on the left", "row", 4, 7), ("place the rightmost block into the tray", "row", 7, 4),
     ("put the front block in the tray", "column", 13, 1), ("move the block in the back", "column", 1, 13)],
)  # fmt: skip
def test_spatial_prior_picks_the_extreme_identical_block(grounder, text, layout, chosen, other):
    """Two identical orange blocks: side by side in region row 1, or one above the other in column 1."""
    places = [(8, 40), (104, 40)] if layout == "row" else [(40, 8), (40, 104)]
    img = scene(*[(ORANGE, xy, 12) for xy in places])[None]
    c = maps(img, grounder.query(text))[2].regions[0]
    assert c.argmax() == chosen and c[other] < 0.1 * c[chosen]


def test_spatial_prior_keeps_a_large_object_whole(grounder):
    """A held block fills half the wrist image: its right part must not decay like a second object."""
    img = scene((ORANGE, (8, 8), 80), (ORANGE, (104, 100), 12))[None]  # big block: regions 0-2, 4-6, 8-10
    c = maps(img, grounder.query("pick up the block on the left"))[2].regions[0]
    big = [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert min(c[big]) > 0.5 and c[15] < 0.1 * c[5]


def test_near_relation_uses_the_anchor(grounder):
    img = scene((BROWN, (96, 96), 32), (ORANGE, (70, 100), 10), (ORANGE, (8, 8), 10))[None]
    c = maps(img, grounder.query("put the block closest to the tray in the tray"))[2].regions[0]
    assert c.argmax() == 14 and c[0] < 0.1 * c[14]  # the block beside the tray, not the far one


def test_images_are_checked():
    with pytest.raises(ConfigError, match=r"\(n, 128, 128, 3\)"):
        ImageStats.compute(np.zeros((2, 64, 64, 3), np.uint8), GRID, Palette.default())
    with pytest.raises(ConfigError, match="uint8"):
        ImageStats.compute(np.zeros((2, 128, 128, 3), np.float32), GRID, Palette.default())


class RegionSensitivePolicy:
    """Stub policy whose action is the mean red of agentview region 5 (x 32..64, y 32..64)."""

    def __init__(self):
        self.calls = 0

    def predict_action(self, obs, instruction, *, allocation):
        self.calls += 1
        assert allocation.sum() == 100
        return np.array([obs["agentview"][32:64, 32:64, 0].mean() / 255.0])


def test_occlusion_sensitivity_finds_the_region_the_policy_reads():
    policy = RegionSensitivePolicy()
    obs = {"agentview": scene((RED, (36, 36), 20)), "wrist": scene(seed=2)}
    m = OcclusionSensitivity(policy)(obs, "lift the red block")
    assert policy.calls == 1 + 32
    assert m.regions[0].argmax() == 5 and m.regions[0][5] == 1.0
    assert not m.regions[1].any() and m.strength[1] == 0.0
