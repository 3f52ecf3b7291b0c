"""Layout samplers keep the relations the instructions rely on; predicates judge states correctly."""

import numpy as np
import pytest

import envs
from envs.scene import BLOCK_HALF, FOOTPRINT
from envs.tasks import TASKS, Subgoal, WorldState, resolve_selector, subgoal_done

SEEDS = range(40)


def _kind(name):
    return "block" if "block" in name else name


@pytest.mark.parametrize("name", sorted(TASKS))
def test_layouts_do_not_overlap_and_stay_in_workspace(name):
    spec = TASKS[name]
    for s in SEEDS:
        lay = spec.layout(np.random.default_rng(s))
        assert list(lay) == [o.name for o in spec.objects]
        names = list(lay)
        for i, a in enumerate(names):
            assert abs(lay[a][0]) <= 0.2 and -0.14 <= lay[a][1] <= 0.16
            for b in names[:i]:
                gap = np.hypot(*(lay[a][:2] - lay[b][:2]))
                assert gap >= FOOTPRINT[_kind(a)] + FOOTPRINT[_kind(b)], (name, s, a, b)


def test_spatial_relations_are_unambiguous():
    for s in SEEDS:
        lay = TASKS["PickLeftBlockIntoTray"].layout(np.random.default_rng(s))
        a, b = lay["block_a"], lay["block_b"]
        assert abs(a[0] - b[0]) >= 0.12 and abs(a[1] - b[1]) <= 0.06
        left = resolve_selector("@left", lay)
        assert lay[left][0] == min(a[0], b[0])
        assert resolve_selector("@right", lay) != left
        lay = TASKS["PickFrontBlockIntoTray"].layout(np.random.default_rng(s))
        a, b = lay["block_a"], lay["block_b"]
        assert abs(a[1] - b[1]) >= 0.12 and abs(a[0] - b[0]) <= 0.06
        lay = TASKS["PickBlockClosestToTrayIntoTray"].layout(np.random.default_rng(s))
        d = sorted(np.linalg.norm(lay[n][:2] - lay["tray"][:2]) for n in ("block_a", "block_b", "block_c"))
        assert d[1] - d[0] >= 0.06


def test_spatial_target_is_not_tied_to_an_object_name():
    spec = TASKS["PickLeftBlockIntoTray"]
    picked = {spec.resolve(spec.layout(np.random.default_rng(s)))[0].obj for s in SEEDS}
    assert picked == {"block_a", "block_b"}


def test_push_distance_in_range():
    for s in SEEDS:
        lay = TASKS["PushRedBlockToZone"].layout(np.random.default_rng(s))
        assert 0.12 <= np.linalg.norm(lay["red_block"][:2] - lay["zone"][:2]) <= 0.25


def _world(pos, vel=None, touching=None, max_bottom=None):
    blocks = [n for n in pos if "block" in n]
    return WorldState(
        {k: np.asarray(v, float) for k, v in pos.items()},
        {b: np.asarray((vel or {}).get(b, [0, 0, 0]), float) for b in blocks},
        {b: set((touching or {}).get(b, ())) for b in blocks},
        {b: (max_bottom or {}).get(b, 0.0) for b in blocks},
    )


def test_in_tray_predicate():
    sg = Subgoal("in", "red_block", "tray")
    tray = [0.1, 0.0, 0.0]
    inside = [0.12, 0.02, 0.004 + BLOCK_HALF]
    assert subgoal_done(sg, _world({"red_block": inside, "tray": tray}))
    assert not subgoal_done(sg, _world({"red_block": [0.2, 0.0, BLOCK_HALF], "tray": tray}))  # outside
    assert not subgoal_done(sg, _world({"red_block": inside, "tray": tray}, touching={"red_block": ["finger_left"]}))
    assert not subgoal_done(sg, _world({"red_block": inside, "tray": tray}, vel={"red_block": [0, 0, -0.3]}))
    assert not subgoal_done(sg, _world({"red_block": [0.12, 0.02, 0.15], "tray": tray}))  # hovering above


def test_on_lift_push_predicates():
    on = Subgoal("on", "red_block", "plate")
    assert subgoal_done(on, _world({"red_block": [0.0, 0.03, 0.01 + BLOCK_HALF], "plate": [0, 0, 0]}))
    assert not subgoal_done(on, _world({"red_block": [0.0, 0.09, BLOCK_HALF], "plate": [0, 0, 0]}))
    lift = Subgoal("lift", "red_block")
    held = {"red_block": ["finger_left", "finger_right"]}
    assert subgoal_done(lift, _world({"red_block": [0, 0, 0.1]}, touching=held))
    assert not subgoal_done(lift, _world({"red_block": [0, 0, 0.1]}))  # not held: falling
    assert not subgoal_done(lift, _world({"red_block": [0, 0, 0.04]}, touching=held))  # too low
    assert not subgoal_done(lift, _world({"red_block": [0, 0, 0.1]}, vel={"red_block": [0, 0, 0.1]}, touching=held))
    push = Subgoal("push", "red_block", "zone")
    assert subgoal_done(push, _world({"red_block": [0.03, 0, BLOCK_HALF], "zone": [0, 0, 0]}))
    assert not subgoal_done(push, _world({"red_block": [0.03, 0, BLOCK_HALF], "zone": [0, 0, 0]}, max_bottom={"red_block": 0.05}))
    assert not subgoal_done(push, _world({"red_block": [0.08, 0, BLOCK_HALF], "zone": [0, 0, 0]}))


def test_initial_state_is_not_success(make_env):
    for name in ("PushRedBlockToZone", "PutBothBlocksInTray"):
        env = make_env(name, render_cameras=False)
        for s in range(3):
            _, info = env.reset(seed=s)
            assert not any(info["subgoals_done"]) and not info["success"]
        obs, reward, terminated, truncated, info = env.step(np.zeros(7))
        assert reward == 0.0 and not terminated
