"""Behaviour of the tabletop env: spaces, determinism, reset options, control, bad input, blow-ups."""

import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from envs.modifiers import Modifiers, parse
from envs.tabletop import MAX_TRANSLATION

ZERO = np.zeros(7, np.float32)


def test_observation_matches_spaces(make_env):
    env = make_env("PickRedBlockIntoTray", image_size=64)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert obs["agentview"].shape == obs["wrist"].shape == (64, 64, 3)
    assert obs["agentview"].dtype == np.uint8 and obs["state"].dtype == np.float32
    for key in ("ee_pos", "ee_quat", "ee_vel", "object_poses", "object_vels", "success", "task",
                "target_object", "modifiers", "physics_unstable", "grasped", "subgoals_done"):
        assert key in info
    assert info["target_object"] == "red_block" and info["destination"] == "tray"
    assert set(info["object_poses"]) == {"red_block", "green_block", "blue_block", "yellow_block", "tray"}
    assert all(p.shape == (7,) for p in info["object_poses"].values())
    np.testing.assert_allclose(obs["state"][:3], info["ee_pos"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(obs["state"][3:7]), 1.0, atol=1e-5)


def test_images_are_upright(make_env):
    # agentview looks down at the table from the front: the far background (dark floor) is at the
    # top rows and the light table at the bottom rows
    env = make_env(image_size=64)
    obs, _ = env.reset(seed=0)
    img = obs["agentview"].astype(float).mean(axis=2)
    assert img[:4].mean() < img[-4:].mean() - 40


def test_same_seed_gives_identical_observations(make_env):
    a, b = make_env(image_size=48), make_env(image_size=48)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    for act in actions:
        for k in ("agentview", "wrist", "state"):
            assert oa[k].tobytes() == ob[k].tobytes()
        assert oa["instruction"] == ob["instruction"]
        oa, *_ = a.step(act)
        ob, *_ = b.step(act)
    # and the same env reset again with the same seed reproduces its first observation
    first, _ = a.reset(seed=7)
    again, _ = b.reset(seed=7)
    assert first["agentview"].tobytes() == again["agentview"].tobytes()


def test_instruction_options_do_not_change_the_scene(make_env):
    env = make_env(image_size=32)
    base, _ = env.reset(seed=5)
    for options in ({"modifiers": {"speed": "fast", "height": "high"}}, {"paraphrase": 0},
                    {"instruction": "put the red block in the tray carefully"}):  # fmt: skip
        obs, _ = env.reset(seed=5, options=options)
        assert obs["agentview"].tobytes() == base["agentview"].tobytes()
        assert obs["state"].tobytes() == base["state"].tobytes()


def test_different_seeds_move_objects(make_env):
    env = make_env(render_cameras=False)
    poses = [env.reset(seed=s)[1]["object_poses"]["red_block"][:2] for s in range(4)]
    assert min(np.linalg.norm(poses[i] - poses[j]) for i in range(4) for j in range(i)) > 1e-3


def test_reset_options(make_env):
    env = make_env(render_cameras=False)
    spec = env.unwrapped.task
    obs, info = env.reset(seed=0, options={"paraphrase": 1})
    assert obs["instruction"] == spec.paraphrases[1] and info["modifiers"] == Modifiers().to_dict()
    obs, info = env.reset(seed=0, options={"paraphrase": 2, "modifiers": {"speed": "fast", "care": True}})
    assert obs["instruction"].startswith(spec.paraphrases[2])
    assert parse(obs["instruction"]) == Modifiers(speed="fast", care=True)
    assert info["modifiers"] == {"speed": "fast", "height": "normal", "care": True}
    obs, info = env.reset(seed=0, options={"instruction": "put the red block in the tray slowly"})
    assert obs["instruction"] == "put the red block in the tray slowly" and info["modifiers"]["speed"] == "slow"
    with pytest.raises(ConfigError, match="paraphrase"):
        env.reset(seed=0, options={"paraphrase": 99})
    with pytest.raises(ConfigError, match="unknown reset option"):
        env.reset(seed=0, options={"instructions": "x"})
    with pytest.raises(ConfigError, match="charset"):
        env.reset(seed=0, options={"instruction": "put it in the tray!"})
    with pytest.raises(ConfigError, match="speed"):
        env.reset(seed=0, options={"modifiers": {"speed": "warp"}})


def test_default_reset_is_neutral_and_random_modifiers_vary(make_env):
    env = make_env(render_cameras=False)
    for s in range(5):
        obs, info = env.reset(seed=s)
        assert parse(obs["instruction"]).is_neutral and Modifiers(**info["modifiers"]).is_neutral
    env2 = make_env(render_cameras=False, random_modifiers=True)
    mods = {tuple(env2.reset(seed=s)[1]["modifiers"].values()) for s in range(12)}
    assert len(mods) > 3
    for s in range(5):
        obs, info = env2.reset(seed=s)
        assert parse(obs["instruction"]) == Modifiers(**info["modifiers"])


def test_translation_is_relative_to_current_pose(make_env):
    env = make_env(render_cameras=False)
    obs, _ = env.reset(seed=0)
    p0 = obs["state"][:3].copy()
    obs, *_ = env.step(np.array([1, 0, 0, 0, 0, 0, -1], np.float32))
    obs, *_ = env.step(np.array([1, 0, 0, 0, 0, 0, -1], np.float32))
    moved = obs["state"][:3] - p0
    assert 1.6 * MAX_TRANSLATION < moved[0] < 2.05 * MAX_TRANSLATION
    assert abs(moved[1]) < 3e-3 and abs(moved[2]) < 3e-3
    # blocked by the table for many steps: no wind-up, one step up moves up right away
    for _ in range(15):
        obs, *_ = env.step(np.array([0, 0, -1, 0, 0, 0, -1], np.float32))
    z_low = obs["state"][2]
    obs, *_ = env.step(np.array([0, 0, 1, 0, 0, 0, -1], np.float32))
    assert 0.6 * MAX_TRANSLATION < obs["state"][2] - z_low < 1.1 * MAX_TRANSLATION
    # holding still stays still
    p = obs["state"][:3].copy()
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1], np.float32))
    assert np.linalg.norm(obs["state"][:3] - p) < 0.01


def test_rotation_and_gripper(make_env):
    env = make_env(render_cameras=False)
    obs, _ = env.reset(seed=0)
    q0 = obs["state"][3:7].copy()
    assert obs["state"][7:].min() > 0.04  # starts open
    for _ in range(3):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 1, 1], np.float32))
    yaw = lambda q: np.arctan2(2 * (q[0] * q[3] + q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2))
    assert 0.45 < yaw(obs["state"][3:7]) - yaw(q0) < 0.62  # 3 x 0.2 rad
    assert obs["state"][7:].max() < 0.01  # closed on nothing


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros(6), "shape"), (np.zeros((1, 7)), "shape"), ([0, 0, np.nan, 0, 0, 0, 0], "NaN"),
     ([np.inf, 0, 0, 0, 0, 0, 0], "inf"), ("forward", "7 numbers")],
)  # fmt: skip
def test_bad_actions_raise_and_leave_state_untouched(make_env, bad, match):
    env = make_env(render_cameras=False)
    env.reset(seed=0)
    u = env.unwrapped
    before = (u.data.qpos.copy(), u.data.qvel.copy(), u.data.mocap_pos.copy(), u.data.ctrl.copy(), u.data.time)
    with pytest.raises(ConfigError, match=match):
        env.step(bad)
    after = (u.data.qpos, u.data.qvel, u.data.mocap_pos, u.data.ctrl, u.data.time)
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_out_of_range_actions_are_clipped(make_env):
    a, b = make_env(render_cameras=False), make_env(render_cameras=False)
    a.reset(seed=3)
    b.reset(seed=3)
    oa, *_ = a.step(np.array([5, -5, 2, 0, 0, 0, 9], np.float32))
    ob, *_ = b.step(np.array([1, -1, 1, 0, 0, 0, 1], np.float32))
    np.testing.assert_array_equal(oa["state"], ob["state"])


def test_physics_blowup_truncates_with_last_good_observation(make_env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs the warning to ./MUJOCO_LOG.TXT
    env = make_env(image_size=32)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(ZERO)
    u = env.unwrapped
    good_state = obs["state"].copy()
    u.data.xfrc_applied[u.model.body("red_block").id, :3] = 1e12  # inject a blow-up
    obs, reward, terminated, truncated, info = env.step(ZERO)
    assert truncated and not terminated and reward == 0.0
    assert info["physics_unstable"] is True
    assert np.all(np.isfinite(obs["state"])) and np.array_equal(obs["state"], good_state)
    assert all(np.all(np.isfinite(p)) for p in info["object_poses"].values())
    obs, info = env.reset(seed=1)  # and the env is usable again
    obs, *_, info = env.step(ZERO)
    assert not info["physics_unstable"]


def test_nan_state_counts_as_blowup(make_env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    env = make_env(render_cameras=False)
    env.reset(seed=0)
    env.unwrapped.data.qvel[:] = np.nan
    obs, reward, terminated, truncated, info = env.step(ZERO)
    assert truncated and info["physics_unstable"] and np.all(np.isfinite(obs["state"]))


def test_truncation_at_max_episode_steps(make_env):
    env = make_env(render_cameras=False, max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(ZERO)[3] for _ in range(3)]
    assert flags == [False, False, True]
    assert make_env("LiftRedBlock", render_cameras=False).unwrapped.max_episode_steps == 120


def test_render_returns_agentview(make_env):
    env = make_env(image_size=32, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.render(), obs["agentview"])
    other = make_env(image_size=32)
    other.reset(seed=0)
    assert other.render() is None


def test_bad_constructor_arguments():
    import envs
    from envs.tabletop import TabletopEnv

    with pytest.raises(ConfigError, match="image_size"):
        envs.make("LiftRedBlock", image_size=3)
    with pytest.raises(ConfigError, match="render_mode"):
        TabletopEnv("LiftRedBlock", render_mode="depth_array")
    with pytest.raises(ConfigError, match="max_episode_steps"):
        TabletopEnv("LiftRedBlock", max_episode_steps=0)


def test_works_in_a_gymnasium_vector_env():
    import functools

    import gymnasium

    make = functools.partial(gymnasium.make, "arrcoc/LiftRedBlock-v0", image_size=32, max_episode_steps=3)
    vec = gymnasium.vector.SyncVectorEnv([make, make])
    try:
        obs, info = vec.reset(seed=0)
        assert obs["agentview"].shape == (2, 32, 32, 3) and len(obs["instruction"]) == 2
        for _ in range(4):  # crosses an autoreset
            obs, reward, terminated, truncated, info = vec.step(np.zeros((2, 7), np.float32))
        assert obs["state"].shape == (2, 9) and np.all(np.isfinite(obs["state"]))
    finally:
        vec.close()
