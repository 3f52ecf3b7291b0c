"""One episode: the record, paired start states across conditions, policies that misbehave."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from arrcoc_steer.errors import ConfigError
from arrcoc_steer.eval import ExpertPolicy, Prompt, run_episode

from .helpers import NaNPolicy, RaisingPolicy, ShapePolicy


@pytest.fixture
def env():
    env = envs.make("LiftRedBlock", render_cameras=False)
    yield env
    env.close()


def test_expert_episode_is_recorded_in_full(env, expert):
    rec = run_episode(expert, env, seed=1_000_000)
    assert (rec.status, rec.success, rec.error) == ("ok", True, None)
    t = rec.length
    assert rec.ee_pos.shape == (t + 1, 3) and rec.actions.shape == (t, 7) and rec.target_pose.shape == (t + 1, 7)
    assert rec.gripper.shape == (t + 1, 2) and rec.grasped.dtype == bool and rec.grasped[-1]
    assert rec.instruction and rec.target_object == "red_block" and rec.max_steps == env.unwrapped.max_episode_steps
    assert rec.destination_pose.shape == (0, 7)  # a lift has no destination


def test_a_placement_records_its_destination_and_lands_on_it(expert):
    from arrcoc_steer.eval.metrics import episode_metrics

    env = envs.make("PutRedBlockOnPlate", image_size=32)
    try:
        rec = run_episode(expert, env, seed=1_000_000)
    finally:
        env.close()
    assert rec.success and rec.destination_pose.shape == (rec.length + 1, 7)
    start = float(np.linalg.norm(rec.target_pose[0, :2] - rec.destination_pose[0, :2]))
    assert episode_metrics(rec)["placement_error"] < 0.03 < start  # the expert put it on the plate


def test_same_seed_same_episode(env, expert):
    a, b = run_episode(expert, env, seed=7), run_episode(expert, env, seed=7)
    assert a.length == b.length and np.array_equal(a.ee_pos, b.ee_pos) and np.array_equal(a.actions, b.actions)


def test_a_prompt_condition_starts_from_the_same_state(env, expert):
    plain = run_episode(expert, env, seed=11)
    quick = run_episode(expert, env, seed=11, condition=Prompt(modifier="quickly"))
    assert quick.instruction == plain.instruction + " quickly"
    assert np.array_equal(plain.ee_pos[0], quick.ee_pos[0])
    assert np.array_equal(plain.target_pose[0], quick.target_pose[0])
    assert quick.success and quick.length < plain.length  # the expert obeys "quickly"


@pytest.mark.parametrize("policy, reason", [
    (ShapePolicy(), r"shape \(6,\), expected \(7,\)"),
    (NaNPolicy(), r"NaN or inf at index \[0, 1, 2, 3, 4, 5, 6\]"),
    (RaisingPolicy(), "policy raised RuntimeError: out of cheese"),
    (lambda obs, instruction: "left", "not 7 numbers|shape \\(\\)"),
])  # fmt: skip
def test_a_misbehaving_policy_fails_the_episode_with_the_reason(env, policy, reason):
    rec = run_episode(policy, env, seed=3)
    assert rec.status == "policy_error" and not rec.success
    assert rec.error is not None and __import__("re").search(reason, rec.error)
    assert len(rec.ee_pos) == rec.length + 1  # the partial trajectory is kept


def test_a_user_lambda_policy_runs(env):
    rec = run_episode(lambda obs, instruction: np.array([0, 0, 0.5, 0, 0, 0, -1.0]), env, seed=3, max_steps=5)
    assert rec.status == "ok" and rec.length == 5 and rec.ee_pos[-1, 2] > rec.ee_pos[0, 2]


def test_frames_are_kept_for_videos():
    env = envs.make("LiftRedBlock", image_size=64)
    try:
        rec = run_episode(ExpertPolicy(), env, seed=5, frames="wrist", max_steps=4)
    finally:
        env.close()
    assert rec.frames.shape == (5, 64, 64, 3) and rec.frames.dtype == np.uint8 and rec.frames.any()
    with pytest.raises(ConfigError, match="frames must be"):
        run_episode(ExpertPolicy(), env, seed=5, frames="top")
