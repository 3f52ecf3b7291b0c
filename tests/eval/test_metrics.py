"""Per-episode metrics: each rule checked on trajectories whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.eval.metrics import episode_metrics, gripper_events, matched_windows, step_speeds, windowed_metrics
from arrcoc_steer.eval.rollout import EpisodeRecord


def record(n: int = 10, speed: float = 0.1) -> EpisodeRecord:
    """Moves along +x at ``speed`` m/s, lifts the target 5 cm after step 4, closes at 3, opens at 8."""
    t = np.arange(n + 1)
    ee = np.stack([t * speed / 10, np.zeros(n + 1), 0.1 + 0.01 * (t > 4)], 1).astype(np.float32)
    target = np.zeros((n + 1, 7), np.float32)
    target[:, 2] = 0.02 + 0.05 * (t > 4)
    actions = np.zeros((n, 7), np.float32)
    actions[:, 6] = -1
    actions[3:8, 6] = 1
    return EpisodeRecord("LiftRedBlock", "unsteered", 0, success=True, length=n, ee_pos=ee, actions=actions,
                         target_pose=target, grasped=t >= 5)


def test_episode_metrics_follow_their_rules():
    m = episode_metrics(record())
    assert m["success"] == 1.0 and m["length"] == 10
    assert m["speed_mean"] == pytest.approx((9 * 0.1 + np.hypot(0.1, 0.1)) / 10, rel=1e-4)  # one step also rises 1 cm
    assert m["path_x"] == pytest.approx(0.1, rel=1e-5) and m["path_y"] == 0
    assert m["path_z"] == pytest.approx(0.01, rel=1e-4)
    assert m["peak_ee_z"] == pytest.approx(0.11) and m["peak_target_lift"] == pytest.approx(0.05)
    assert (m["gripper_closes"], m["gripper_opens"], m["time_to_grasp"]) == (1, 1, 5)
    assert m["carry_ee_z"] == pytest.approx(0.11)  # held from step 5, when the arm is 1 cm up
    low = record()
    low.grasped[:] = np.arange(11) < 5  # held only before the rise
    assert episode_metrics(low)["carry_ee_z"] == pytest.approx(0.10)
    assert np.isnan(m["placement_error"])  # a lift has no destination


def test_placement_error_is_the_final_horizontal_distance_to_the_destination():
    rec = record()
    rec.destination_pose = np.zeros((11, 7), np.float32)
    rec.destination_pose[:, :3] = [0.03, 0.04, 0.0]  # 5 cm away horizontally; heights do not count
    assert episode_metrics(rec)["placement_error"] == pytest.approx(0.05)
    rec.target_pose[-1, :2] = [0.03, 0.04]  # ends on it
    assert episode_metrics(rec)["placement_error"] == pytest.approx(0.0)


def test_no_steps_gives_nan_not_an_error():
    rec = EpisodeRecord("LiftRedBlock", "x", 0, status="policy_error", ee_pos=np.zeros((1, 3), np.float32),
                        target_pose=np.zeros((1, 7), np.float32), grasped=np.zeros(1, bool))
    m = episode_metrics(rec)
    assert np.isnan(m["speed_mean"]) and m["time_to_grasp"] is None and m["gripper_closes"] == 0
    assert np.isnan(m["carry_ee_z"])  # never held


def test_gripper_events_start_open_and_ignore_zero():
    a = np.zeros((6, 7))
    a[:, 6] = [-1, 0.5, 0, 1, -0.2, 0.3]
    assert gripper_events(a) == (2, 1)


def test_windowed_metrics_compare_equal_time_spans():
    slow, fast = record(40, speed=0.1), record(20, speed=0.2)
    w = matched_windows([{"task": "t", "status": "ok", "length": 40}, {"task": "t", "status": "ok", "length": 20}])["t"]
    assert w == 20
    ws, wf = windowed_metrics(slow.ee_pos, w), windowed_metrics(fast.ee_pos, w)
    assert wf["speed_w"] / ws["speed_w"] == pytest.approx(2.0, rel=0.05)
    assert ws["window_steps"] == wf["window_steps"] == 20
    # total displacement would call them equal-ish; the matched window does not
    assert episode_metrics(slow)["path_x"] == pytest.approx(episode_metrics(fast)["path_x"], rel=0.01)


def test_mean_height_is_over_the_window_not_the_whole_episode():
    """An arm that rises 10 cm in its first 10 steps then holds: over the first 10 steps it works at
    half the lift on average; a later climb outside the window does not count."""
    z = np.r_[np.linspace(0.1, 0.2, 11), np.full(10, 0.2), np.full(10, 0.5)]
    ee_pos = np.c_[np.zeros((len(z), 2)), z]
    assert windowed_metrics(ee_pos, 10)["mean_ee_z_w"] == pytest.approx(0.15)
    assert windowed_metrics(ee_pos, 20)["mean_ee_z_w"] == pytest.approx((0.15 * 11 + 0.2 * 10) / 21)
    assert np.isnan(windowed_metrics(ee_pos[:1], 10)["mean_ee_z_w"])


def test_matched_window_ignores_failed_and_crashed_episodes():
    rows = [{"task": "a", "status": "policy_error", "length": 0}, {"task": "a", "status": "ok", "length": 12},
            {"task": "a", "status": "crashed", "length": 0}, {"task": "b", "status": "ok", "length": 30}]
    assert matched_windows(rows) == {"a": 12, "b": 30}
    assert matched_windows(rows, 15) == {"a": 15, "b": 15}
    with pytest.raises(ConfigError, match="window must be"):
        matched_windows(rows, "max")


def test_step_speeds_are_finite_differences_at_10_hz():
    p = np.array([[0, 0, 0], [0.03, 0.04, 0]])
    assert step_speeds(p).tolist() == pytest.approx([0.5])


def test_episode_outcome_says_where_a_failed_episode_went_wrong():
    from arrcoc_steer.eval.metrics import OUTCOMES, episode_outcome

    def pose(x, z):
        return [x, 0.0, z, 1, 0, 0, 0]

    tray = np.array([pose(0.3, 0.0)] * 2)
    held, never = np.array([0, 1]), np.array([0, 0])

    def outcome(end, grasped=held, dest=tray, push=False):
        return episode_outcome(False, grasped, np.array([pose(0.1, 0.02), end]), dest, push)

    assert outcome(pose(0.31, 0.17)) == "held above the destination"  # carried over the tray, never lowered
    assert outcome(pose(0.29, 0.062)) == "stacked at the destination"  # one block up: on a block already there
    assert outcome(pose(0.30, 0.024)) == "at the destination, not accepted"
    first_done = episode_outcome(False, held, np.array([pose(0.1, 0.02), pose(0.30, 0.024)]), tray, steps=2)
    assert first_done == "first step done, a later one not"  # a long task: its second subgoal failed
    assert outcome(pose(0.10, 0.02)) == "away from the destination"  # grasped, put back down
    assert outcome(pose(0.10, 0.02), grasped=never) == "target never grasped"
    assert outcome(pose(0.10, 0.02), grasped=never, push=True) == "target never moved"
    assert outcome(pose(0.20, 0.02), grasped=never, push=True) == "away from the destination"
    assert outcome(pose(0.10, 0.05), dest=np.zeros((0, 7))) == "grasped, not completed"  # lift, dropped
    assert episode_outcome(True, never, np.zeros((0, 7)), tray) == "success"
    assert set(OUTCOMES) >= {"success", "held above the destination", "target never grasped"}
