import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError, UnknownNameError
from arrcoc_steer.regions import RegionGrid
from arrcoc_steer.relevance import (
    LABELS,
    TENSIONS,
    RelevanceAllocator,
    RelevanceConfig,
    Steer,
    gripper_pixels,
    project_points,
    query_sensitivity_iou,
)

from .conftest import BLUE, BROWN, RED, pair, scene


@pytest.mark.parametrize("budget", [64, 65, 100, 255, 256, 399, 400])
def test_exact_budget_and_valid_allocation(allocator, four_blocks, budget):
    r = allocator(four_blocks, "put the red block in the tray", budget=budget)
    assert int(r.allocation.sum()) == budget
    RegionGrid().check_allocation(r.allocation)


def test_deterministic(allocator, four_blocks):
    a = allocator(four_blocks, "put the red block in the tray", budget=100)
    b = RelevanceAllocator(grounder=allocator.grounder)(four_blocks.copy(), "put the red block in the tray", budget=100)
    np.testing.assert_array_equal(a.allocation, b.allocation)
    np.testing.assert_array_equal(a.relevance, b.relevance)


def test_monotone_in_relevance(allocator, four_blocks):
    """Raising one region's relevance (a growing box bias) never takes tokens from it."""
    tokens = [
        allocator(four_blocks, "lift the red block", budget=100,
                  steer=[Steer("box", s, camera="agentview", box=(64, 64, 96, 96))]).allocation[0, 10]
        for s in np.linspace(0, 2, 9)
    ]  # fmt: skip
    assert all(np.diff(tokens) >= 0) and tokens[-1] > tokens[0]


def test_the_named_block_gets_the_most_tokens(allocator, four_blocks):
    for colour, region in [("red", 0), ("blue", 15), ("green", 3), ("yellow", 12)]:
        r = allocator(four_blocks, f"put the {colour} block in the tray", budget=100)
        assert r.relevance.argmax() == region and r.allocation[0, region] == r.allocation.max()
        assert r.dominant[0, region] == "participatory"
        assert r.tension_winners["exploit_vs_explore"][0, region] == "exploit"


def test_query_sensitivity_on_a_synthetic_scene(allocator, four_blocks):
    a = allocator(four_blocks, "put the red block in the tray", budget=100).allocation
    b = allocator(four_blocks, "put the blue block in the tray", budget=100).allocation
    assert query_sensitivity_iou(a, b) <= 0.5


@pytest.mark.parametrize("value", [0, 127, 255])
def test_blank_images_give_a_valid_allocation(allocator, value):
    blank = np.full((2, 128, 128, 3), value, np.uint8)
    for text in ("lift the red block", "", None):
        r = allocator(blank, text, budget=100)
        assert int(r.allocation.sum()) == 100 and np.isfinite(r.relevance).all()
        assert set(np.unique(r.dominant)) == {"none"}


def test_result_records_maps_dominance_and_tensions(allocator, four_blocks):
    r = allocator({"agentview": four_blocks[0], "wrist": four_blocks[1], "instruction": "lift the blue block"})
    assert r.instruction == "lift the blue block" and r.budget == 100
    assert set(r.maps) == {"propositional", "perspectival", "participatory"}
    assert all(m.shape == (2, 16) for m in r.maps.values()) and r.cell_relevance is None
    fine = RelevanceAllocator(RelevanceConfig(cell_relevance=True), grounder=allocator.grounder)(four_blocks, "lift")
    assert fine.cell_relevance.shape == (2, 16, 16)
    np.testing.assert_array_equal(fine.cell_relevance, allocator.relevance_maps(four_blocks, "lift"))
    assert set(np.unique(r.dominant)) <= set(LABELS)
    assert set(r.tension_winners) == set(TENSIONS)
    for t, poles in TENSIONS.items():
        assert set(np.unique(r.tension_winners[t])) <= set(poles)
    assert r.detailed().sum() == (r.allocation > 100 / 32).sum()
    assert "agentview region 15" in r.explain("agentview", 15) and "participatory" in r.explain("agentview", 15)


# -- relevance steering ----------------------------------------------------------------------------


def test_box_bias_pulls_tokens_and_is_reported_as_steering(allocator, four_blocks):
    plain = allocator(four_blocks, "lift the red block", budget=100)
    steered = allocator(four_blocks, "lift the red block", budget=100,
                        steer=Steer("box", 2.0, camera="wrist", box=(0, 0, 32, 32)))  # fmt: skip
    assert steered.allocation[1, 0] > plain.allocation[1, 0]
    assert steered.dominant[1, 0] == "steering" and steered.bias[1, 0] == pytest.approx(2.0)
    assert not steered.bias[0].any()


def test_mask_bias_accepts_one_or_every_camera(allocator, four_blocks):
    mask = np.zeros((128, 128), bool)
    mask[96:, 96:] = True
    one = allocator(four_blocks, "", budget=100, steer=[Steer("mask", 1.0, camera="agentview", mask=mask)])
    both = allocator(four_blocks, "", budget=100, steer=[Steer("mask", 1.0, mask=np.stack([mask, mask]))])
    assert one.bias[0, 15] == 1.0 and not one.bias[1].any()
    assert both.bias[:, 15].tolist() == [1.0, 1.0]


def test_target_bias_uses_masks_or_the_grounded_instruction(allocator, four_blocks):
    masks = np.zeros((2, 128, 128), bool)
    masks[0, 100:112, 100:112] = True  # the blue block
    seg = allocator(four_blocks, "lift the red block", budget=100, steer=[Steer("target", 1.0)], target_masks=masks)
    assert seg.bias[0].argmax() == 15 and not seg.bias[1].any()
    grounded = allocator(four_blocks, "lift the red block", budget=100, steer=[Steer("target", 1.0)])
    assert grounded.bias[0].argmax() == 0


def test_gripper_bias_from_a_pixel_or_the_wrist_prior(allocator, four_blocks):
    r = allocator(four_blocks, "", budget=100, steer=[Steer("gripper", 1.0)], gripper_px={"agentview": (70.0, 40.0)})
    assert r.bias[0].argmax() == 6  # x 64..96, y 32..64
    assert set(np.flatnonzero(r.bias[1] == r.bias[1].max())) == {13, 14}  # fingers at bottom centre
    with pytest.raises(ConfigError, match="gripper_px"):
        allocator(four_blocks, "", steer=[Steer("gripper", camera="agentview")])


def test_project_points_and_gripper_pixels():
    m = np.array([[100.0, 0, 64, 0], [0, 100, 64, 0], [0, 0, 1, 0]])  # pinhole at the origin, looking +z
    np.testing.assert_allclose(project_points(m, [0.1, -0.2, 1.0]), [74.0, 44.0])
    assert gripper_pixels({"agentview": m, "wrist": m}, np.array([0, 0, 2.0])) == {
        "agentview": (64.0, 64.0), "wrist": (64.0, 64.0)}  # fmt: skip


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 63, 401, 1000, 100.5, True])
def test_budget_outside_the_range_is_an_error(allocator, four_blocks, budget):
    with pytest.raises(ConfigError, match="budget"):
        allocator(four_blocks, "lift the red block", budget=budget)


def test_unknown_steering_target_says_did_you_mean():
    with pytest.raises(UnknownNameError, match="Did you mean 'gripper'"):
        Steer("griper")
    with pytest.raises(UnknownNameError, match="camera"):
        Steer("target", camera="front")


@pytest.mark.parametrize("shape", [(64, 64), (3, 128, 128), (128, 128, 3)])
def test_mask_of_the_wrong_size_is_an_error(allocator, four_blocks, shape):
    with pytest.raises(ConfigError, match=r"\(128, 128\) or \(2, 128, 128\)"):
        allocator(four_blocks, "", steer=[Steer("mask", mask=np.ones(shape))])
    with pytest.raises(ConfigError, match="target_masks"):
        allocator(four_blocks, "", target_masks=np.ones(shape, bool))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"toward": "mask"}, "Steer.mask is required"), ({"toward": "mask", "mask": np.zeros((128, 128))}, "empty"),
     ({"toward": "box"}, "Steer.box is required"), ({"toward": "box", "box": (10, 10, 5, 20)}, "x0 < x1"),
     ({"toward": "target", "box": (0, 0, 1, 1)}, "only then"),
     ({"toward": "target", "strength": float("inf")}, "finite")],
)  # fmt: skip
def test_malformed_steers_are_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Steer(**kwargs)


def test_steers_that_would_never_fire_are_errors(allocator, four_blocks):
    with pytest.raises(ConfigError, match="found no target"):
        allocator(four_blocks, "do something", steer=[Steer("target")])
    with pytest.raises(ConfigError, match="outside"):
        allocator(four_blocks, "", steer=[Steer("box", box=(200, 200, 300, 300))])


def test_bad_observations_and_configs_are_errors(allocator):
    with pytest.raises(ConfigError, match="lacks camera"):
        allocator({"agentview": scene()}, "lift")
    with pytest.raises(ConfigError, match="one per camera"):
        allocator(scene()[None], "lift")
    with pytest.raises(ConfigError, match="uint8"):
        allocator(pair(scene()).astype(np.float32), "lift")
    with pytest.raises(ConfigError, match="camera_weights"):
        RelevanceConfig(camera_weights=(0.0, 0.0))
    with pytest.raises(ConfigError, match="phase_aware must be True or False"):
        RelevanceConfig(phase_aware="no")


def test_camera_weights_shift_budget_between_cameras(allocator):
    images = pair(scene((RED, (10, 10), 12)), scene((BLUE, (70, 70), 20), seed=3))
    favour_wrist = RelevanceAllocator(RelevanceConfig(camera_weights=(0.2, 1.0)), grounder=allocator.grounder)
    a = allocator(images, "lift the red block", budget=100).allocation
    b = favour_wrist(images, "lift the red block", budget=100).allocation
    assert b[1].sum() > a[1].sum()


def test_a_long_control_loop_does_not_grow_memory(allocator, four_blocks):
    import tracemalloc

    steer = [Steer("gripper", 0.3)]
    run = lambda k: allocator(four_blocks, ("lift the red block", "put the blue block on the plate")[k % 2],
                              budget=64 + k % 300, steer=steer, gripper_px={"agentview": (k % 128, 60)})  # fmt: skip
    for k in range(20):  # warm every cache
        run(k)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for k in range(300):
        run(k)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes retained over 300 steps"


OPEN = np.array([0, 0, 0.15, 1, 0, 0, 0, 0.045, 0.045])  # ee xyz, quat wxyz, fingers fully open
HOLDING = OPEN.copy()
HOLDING[7:9] = 0.019  # closed on a 4 cm block
CLOSED_ON_AIR = OPEN.copy()
CLOSED_ON_AIR[7:9] = 0.0


def carrying_scene() -> dict:
    """The wrist view of a held red block over a brown tray: block at the top, tray at the bottom."""
    wrist = scene((RED, (52, 0), 24), (BROWN, (16, 80), 96))
    return {"agentview": scene((RED, (60, 60), 12), (BROWN, (90, 90), 30)), "wrist": wrist}


def test_phase_is_read_from_the_fingers():
    from arrcoc_steer.relevance import phase_of

    assert phase_of(OPEN) == "reach" and phase_of(CLOSED_ON_AIR) == "reach" and phase_of(HOLDING) == "carry"
    with pytest.raises(ConfigError, match="indices 7..8"):
        phase_of(OPEN[:7])
    with pytest.raises(ConfigError, match="must be finite"):
        phase_of(np.r_[OPEN[:7], np.nan, 0.02])


def test_carrying_moves_detail_from_the_held_block_to_the_destination(allocator):
    """Once the block is held, the wrist camera's tray (bottom half) gains tokens and the block loses."""
    obs = carrying_scene()
    text = "put the red block in the tray"
    reach = allocator({**obs, "state": OPEN}, text, budget=64)
    carry = allocator({**obs, "state": HOLDING}, text, budget=64)
    assert (reach.phase, carry.phase) == ("reach", "carry")
    wrist = reach.cameras.index("wrist")
    top, bottom = slice(0, 8), slice(8, 16)  # region rows 0-1 / 2-3 of the 4 x 4 grid
    assert carry.allocation[wrist, bottom].sum() > reach.allocation[wrist, bottom].sum()
    assert carry.allocation[wrist, top].sum() < reach.allocation[wrist, top].sum()
    assert int(carry.allocation.sum()) == 64
    assert "phase carry" in carry.explain("wrist", 12)


def test_phase_can_be_given_or_switched_off(allocator, grounder):
    obs = {**carrying_scene(), "state": HOLDING}
    text = "put the red block in the tray"
    stateless = {k: v for k, v in obs.items() if k != "state"}
    given = allocator(stateless, text, budget=64, phase="carry")
    np.testing.assert_array_equal(given.allocation, allocator(obs, text, budget=64).allocation)
    static = RelevanceAllocator(RelevanceConfig(phase_aware=False), grounder=grounder)(obs, text, budget=64)
    assert static.phase == "reach"
    np.testing.assert_array_equal(static.allocation, allocator(stateless, text, budget=64).allocation)
    with pytest.raises(ConfigError, match="phase must be one of"):
        allocator(obs, text, budget=64, phase="lift")
