"""Per-episode metrics, each a documented rule over the trajectories of an :class:`EpisodeRecord`.

Speeds are finite differences of the tool-centre-point position at the 10 Hz control rate,
``v_t = |p_{t+1} - p_t| * 10`` m/s for step ``t`` (the mean speed over the step, exact for windows).

Whole-episode metrics (:func:`episode_metrics`):

=====================  ==========================================================================
``success``            1.0 if the task's success predicate held at the end, else 0.0
``length``             env steps taken
``speed_mean``         mean of ``v_t`` over the episode (m/s); mixes phases in episode-specific
                       proportions -- prefer ``speed_w`` for comparisons
``path_x|y|z``         distance travelled along each world axis, ``sum_t |p_{t+1} - p_t|`` per axis (m);
                       grows with episode length -- prefer ``path_*_w``
``peak_ee_z``          highest tool-centre-point height above the table (m)
``peak_target_lift``   highest target-object height minus its height at reset (m)
``carry_ee_z``         mean tool-centre-point height over the steps where the target is held (m): how
                       high the arm carries, whatever the episode's pace; NaN if it is never grasped
``gripper_closes``     commanded closings: the gripper command (action[6]) goes from < 0 (or the
                       open start) to > 0; ``gripper_opens`` the reverse; exactly 0 keeps the state
``time_to_grasp``      first step at which both fingers hold the target object (steps); None if never
``placement_error``    horizontal distance from the target object to the centre of its destination
                       (tray, plate) at the end (m): how far off a failed placement landed; NaN
                       when the task has no destination object
=====================  ==========================================================================

Each failed episode also gets an ``outcome`` (:func:`episode_outcome`): where it went wrong, read off
the target's trajectory, so a results table says *why* success moved, not only that it did.

Length-controlled metrics (:func:`windowed_metrics`), the ones DESIGN.md asks effects to be claimed on
(total displacement per episode confounds episode length; a faster policy ends sooner):

=====================  ==========================================================================
``speed_w``            mean ``v_t`` over the first ``W`` steps, ``t < W``
``path_x|y|z_w``       distance travelled along each axis in the first ``W`` steps (m)
``mean_ee_z_w``        mean tool-centre-point height above the table over those steps' positions
                       (m): how high the arm works, where ``peak_ee_z`` is one instant; a slower
                       arm that is still above its object scores higher -- ``carry_ee_z`` is not paced
=====================  ==========================================================================

The matched window ``W`` is fixed per task across every condition and seed compared
(:func:`matched_windows`): by default the length of the task's shortest episode among the compared
episodes (status ``ok``), so every episode is measured over the same time span from the same start
state; or a fixed number of steps. An episode shorter than ``W`` (only possible with a fixed window,
or for a policy failure) is measured over the steps it has, and its ``window_steps`` says so.

>>> import numpy as np
>>> p = np.array([[0, 0, 0.1], [0.01, 0, 0.1], [0.02, 0, 0.12], [0.02, 0, 0.12]], float)
>>> step_speeds(p).round(3).tolist()
[0.1, 0.224, 0.0]
>>> round(windowed_metrics(p, 2)["speed_w"], 3)
0.162
>>> round(windowed_metrics(p, 2)["mean_ee_z_w"], 3)
0.107
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import ConfigError
from .rollout import CONTROL_HZ, EpisodeRecord

EPISODE_METRICS = (
    "success", "length", "speed_mean", "path_x", "path_y", "path_z", "peak_ee_z", "peak_target_lift", "carry_ee_z",
    "gripper_closes", "gripper_opens", "time_to_grasp", "placement_error",
)  # fmt: skip
WINDOWED_METRICS = ("speed_w", "path_x_w", "path_y_w", "path_z_w", "mean_ee_z_w")
METRICS = EPISODE_METRICS + WINDOWED_METRICS
BINARY_METRICS = ("success",)

NEAR_DESTINATION = 0.03  # m: a target this close (horizontally) to its destination's centre is "at" it
HELD_ABOVE = 0.08  # m of lift above its start: the target is held up in the air, never lowered
STACKED = 0.025  # m of lift: resting about one block (4 cm) up, on something placed there before
OUTCOMES = (
    "success",
    "held above the destination",  # carried there, never lowered
    "stacked at the destination",  # lowered onto something (usually a wrong block placed first)
    "at the destination, not accepted",  # low and close, but still held, or not inside, or not settled
    "away from the destination",  # ended more than NEAR_DESTINATION from it
    "target never grasped",  # pick tasks: both fingers never held it
    "target never moved",  # push tasks: it never left its start
    "grasped, not completed",  # a task without a destination (lift)
    "first step done, a later one not",  # multi-step tasks: the first subgoal's target lies at its destination
)


def episode_outcome(success: bool, grasped: np.ndarray, target_pose: np.ndarray, destination_pose: np.ndarray,
                    push: bool = False, steps: int = 1) -> str:  # fmt: skip
    """Which of :data:`OUTCOMES` an episode ended in, from its (T+1,) ``grasped`` flags and (T+1, 7)
    target and destination poses (those of the task's first subgoal); ``push``: that subgoal moves the
    target without grasping it; ``steps``: the task's number of subgoals.

    >>> start, up = [0.1, 0, 0.02, 1, 0, 0, 0], [0.3, 0, 0.17, 1, 0, 0, 0]
    >>> tray = np.array([[0.3, 0, 0, 1, 0, 0, 0]] * 2)
    >>> episode_outcome(False, np.array([0, 1]), np.array([start, up]), tray)
    'held above the destination'
    >>> episode_outcome(False, np.array([0, 0]), np.array([start, start]), tray)
    'target never grasped'
    """
    if success:
        return "success"
    target_pose = np.asarray(target_pose, np.float64)
    if len(target_pose) == 0:
        return "target never moved" if push else "target never grasped"
    lift = target_pose[-1, 2] - target_pose[0, 2]
    if len(destination_pose):
        off = np.linalg.norm(target_pose[-1, :2] - np.asarray(destination_pose, np.float64)[-1, :2])
        if off < NEAR_DESTINATION:
            if lift > HELD_ABOVE:
                return "held above the destination"
            if lift > STACKED:
                return "stacked at the destination"
            return "first step done, a later one not" if steps > 1 else "at the destination, not accepted"
    if push:
        moved = np.linalg.norm(target_pose[-1, :2] - target_pose[0, :2]) > 0.01
        return "away from the destination" if moved else "target never moved"
    if not np.asarray(grasped).any():
        return "target never grasped"
    return "away from the destination" if len(destination_pose) else "grasped, not completed"


def step_speeds(ee_pos: np.ndarray) -> np.ndarray:
    """(T,) end-effector speed of each step (m/s) from (T+1, 3) positions."""
    ee_pos = np.asarray(ee_pos, np.float64)
    return np.linalg.norm(np.diff(ee_pos, axis=0), axis=1) * CONTROL_HZ if len(ee_pos) > 1 else np.zeros(0)


def gripper_events(actions: np.ndarray) -> tuple[int, int]:
    """(closings, openings) of the commanded gripper, starting open (module docstring)."""
    closed, closes, opens = False, 0, 0
    for g in np.asarray(actions, np.float64).reshape(-1, 7)[:, 6]:
        if g > 0 and not closed:
            closed, closes = True, closes + 1
        elif g < 0 and closed:
            closed, opens = False, opens + 1
    return closes, opens


def episode_metrics(rec: EpisodeRecord) -> dict[str, float | int | None]:
    """The whole-episode metrics of ``rec`` (module docstring); NaN where there are no steps."""
    nan = float("nan")
    steps = np.abs(np.diff(rec.ee_pos.astype(np.float64), axis=0)) if len(rec.ee_pos) > 1 else np.zeros((0, 3))
    closes, opens = gripper_events(rec.actions)
    held = np.flatnonzero(rec.grasped)
    z0 = float(rec.target_pose[0, 2]) if len(rec.target_pose) else nan
    return {
        "success": float(rec.success),
        "length": int(rec.length),
        "speed_mean": float(step_speeds(rec.ee_pos).mean()) if len(steps) else nan,
        "path_x": float(steps[:, 0].sum()) if len(steps) else nan,
        "path_y": float(steps[:, 1].sum()) if len(steps) else nan,
        "path_z": float(steps[:, 2].sum()) if len(steps) else nan,
        "peak_ee_z": float(rec.ee_pos[:, 2].max()) if len(rec.ee_pos) else nan,
        "peak_target_lift": float(rec.target_pose[:, 2].max() - z0) if len(rec.target_pose) else nan,
        "carry_ee_z": float(rec.ee_pos[held, 2].mean()) if len(held) else nan,
        "gripper_closes": closes,
        "gripper_opens": opens,
        "time_to_grasp": int(held[0]) if len(held) else None,
        "placement_error": (
            float(np.linalg.norm(rec.target_pose[-1, :2] - rec.destination_pose[-1, :2]))
            if len(rec.destination_pose) and len(rec.target_pose) else nan
        ),
    }


def windowed_metrics(ee_pos: np.ndarray, window: int) -> dict[str, float]:
    """The length-controlled metrics over the first ``window`` steps of (T+1, 3) positions."""
    if window < 1:
        raise ConfigError(f"window must be >= 1 step, got {window}")
    p = np.asarray(ee_pos, np.float64)[: window + 1]
    if len(p) < 2:
        return {**dict.fromkeys(WINDOWED_METRICS, float("nan")), "window_steps": 0}
    steps = np.abs(np.diff(p, axis=0))
    return {
        "speed_w": float(step_speeds(p).mean()),
        "path_x_w": float(steps[:, 0].sum()),
        "path_y_w": float(steps[:, 1].sum()),
        "path_z_w": float(steps[:, 2].sum()),
        "mean_ee_z_w": float(p[:, 2].mean()),
        "window_steps": len(steps),
    }


def matched_windows(rows: Iterable[Mapping], window: int | str = "min") -> dict[str, int]:
    """Per task, the window ``W`` (steps) every compared episode is measured over.

    ``rows`` are episode rows (``task``, ``status``, ``length``). ``window="min"``: the shortest
    ``ok`` episode of the task (at least 1 step); an int: that many steps for every task.
    """
    rows = list(rows)
    tasks = sorted({r["task"] for r in rows})
    if window != "min":
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be 'min' or an int >= 1 (steps), got {window!r}")
        return dict.fromkeys(tasks, window)
    out = {}
    for task in tasks:
        lengths = [int(r["length"]) for r in rows if r["task"] == task and r["status"] == "ok"]
        out[task] = max(1, min(lengths)) if lengths else 1
    return out
