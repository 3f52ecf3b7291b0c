"""Segmentation masks and camera projection agree with each other and with the simulator."""

import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError


def _project(P, p):
    uvw = P @ np.append(p, 1.0)
    return uvw[:2] / uvw[2]


@pytest.mark.parametrize("seed", [0, 1])
def test_target_projects_into_its_mask(make_env, seed):
    env = make_env("PutRedInTrayThenBlueOnPlate", image_size=96, segmentation=True)
    obs, info = env.reset(seed=seed)
    u = env.unwrapped
    masks = info["segmentation"]["agentview"]
    assert masks["target"].any() and masks["gripper"].any() and masks["table"].any()
    assert not (masks["target"] & masks["gripper"]).any()
    assert np.array_equal(masks["target"], masks["red_block"])
    assert np.array_equal(masks["destination"], masks["tray"])
    P = u.camera_matrix("agentview")
    for name in ("red_block", "blue_block", "tray", "plate"):
        col, row = _project(P, info["object_poses"][name][:3] + [0, 0, 0.01])
        assert 0 <= row < 96 and 0 <= col < 96, name  # every object is in view
        assert masks[name][int(row), int(col)], name
    # the hand: project the palm centre into the gripper mask
    palm = u.data.xpos[u.model.body("hand").id]
    col, row = _project(P, palm)
    assert masks["gripper"][int(row), int(col)]


def test_segmentation_method_matches_info(make_env):
    env = make_env("PickLeftBlockIntoTray", image_size=64, segmentation=True)
    obs, info = env.reset(seed=3)
    masks = env.unwrapped.segmentation("wrist")
    for k, v in masks.items():
        assert v.dtype == bool and v.shape == (64, 64)
        assert np.array_equal(v, info["segmentation"]["wrist"][k])
    # the wrist camera sees its own fingers
    assert masks["gripper"].any()
    with pytest.raises(ConfigError):
        env.unwrapped.segmentation("topdown")


def test_spatial_target_is_the_left_block(make_env):
    env = make_env("PickLeftBlockIntoTray", image_size=64, segmentation=True)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        target = info["target_object"]
        other = ({"block_a", "block_b"} - {target}).pop()
        assert info["object_poses"][target][0] < info["object_poses"][other][0]
        cols = np.nonzero(info["segmentation"]["agentview"]["target"])[1]
        other_cols = np.nonzero(info["segmentation"]["agentview"][other])[1]
        assert cols.mean() < other_cols.mean()  # left in the image too


def test_wrist_camera_matrix_follows_the_hand(make_env):
    env = make_env(image_size=64)
    env.reset(seed=0)
    u = env.unwrapped
    P0 = u.camera_matrix("wrist")
    env.step(np.array([1, 0, 0, 0, 0, 0, -1], np.float32))
    assert not np.allclose(P0, u.camera_matrix("wrist"))
    # a point straight below the tool centre point projects near the image's centre column
    col, row = _project(u.camera_matrix("wrist"), u.ee_pos() - [0, 0, 0.07])
    assert abs(col - 32) < 3


def test_intrinsics_extrinsics_compose_to_camera_matrix(make_env):
    env = make_env(image_size=64)
    env.reset(seed=0)
    u = env.unwrapped
    for cam in ("agentview", "wrist"):
        P = u.camera_intrinsics(cam) @ u.camera_extrinsics(cam)[:3]
        Q = u.camera_matrix(cam)
        np.testing.assert_allclose(P / P[2, 3], Q / Q[2, 3], atol=1e-9)
