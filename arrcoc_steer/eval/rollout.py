"""One episode of a policy under a condition on a task with a seed -> an :class:`EpisodeRecord`.

The loop, top to bottom (:func:`run_episode`):

1. ``env.reset(seed)``; if the condition changes the instruction, reset again with the same seed
   and the new instruction -- the layout and the start pose are identical (the instruction draws no
   random numbers), so every condition of a seed starts from the same state;
2. seed Python's, NumPy's and torch's global generators with the seed (stochastic policies are
   reproducible on any backend), ``policy.bind_env(env)`` and ``policy.reset()`` when they exist;
3. inside the condition's steering context, every step: observation -> ``predict_action`` (with
   the condition's keyword arguments) -> check the action -> ``env.step`` -> record -> feedback;
4. stop on success, on the env's time limit, or when the policy fails.

A policy that raises, or returns anything but 7 finite numbers, ends the episode as failed
(``status="policy_error"``, the reason in ``error``); everything else that raises (the simulator,
the harness) propagates, and the sweep records the episode as crashed and retries it.

>>> import envs
>>> from arrcoc_steer.eval.policies import ExpertPolicy
>>> env = envs.make("LiftRedBlock", render_cameras=False)
>>> rec = run_episode(ExpertPolicy(), env, seed=3)
>>> rec.status, rec.success, rec.ee_pos.shape == (rec.length + 1, 3)
('ok', True, True)
>>> env.close()
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, SteeringError
from .conditions import Condition, Resources, Runtime, Unsteered
from .policies import Policy, as_policy

CONTROL_HZ = 10  # env steps per second (envs.tabletop.CONTROL_HZ)
FRAME_CAMERAS = ("agentview", "wrist")
STATUSES = ("ok", "policy_error", "crashed")
ARRAY_FIELDS = ("ee_pos", "ee_vel", "actions", "gripper", "target_pose", "destination_pose", "grasped")


@dataclass
class EpisodeRecord:
    """Everything one episode measured. Arrays have ``T + 1`` rows for states (reset + every step)
    and ``T`` rows for actions, where ``T = length`` is the number of env steps taken.

    Attributes:
        task, condition, seed: what ran.
        instruction: the instruction the policy was given.
        status: ``ok``; ``policy_error`` (the policy raised or returned an invalid action: the
            episode counts as failed); ``crashed`` (anything else raised; the sweep retries it).
        error: the reason for a non-ok status.
        success: the task's success predicate held at the end.
        length: env steps taken; ``max_steps``: the env's time limit.
        target_object: name of the object of the task's first subgoal.
        ee_pos: (T+1, 3) tool centre point (m). ee_vel: (T+1, 3) its velocity (m/s).
        actions: (T, 7) actions sent to the env. gripper: (T+1, 2) finger positions (m).
        target_pose: (T+1, 7) target object position + quaternion. grasped: (T+1,) target held.
        destination_pose: (T+1, 7) pose of the first subgoal's container or plate; (0, 7) when the
            task has none (lift, push to a zone).
        traces: per-step arrays of the condition (``alpha``, ``ratio``, ``allocation``).
        notes: JSON-able facts from the condition (intervention counts, reference speed).
        frames: (T+1, H, W, 3) uint8 camera frames, when asked for.
        attempts: runs of this episode so far (crashes retried); wall_s: seconds it took.
    """

    task: str
    condition: str
    seed: int
    instruction: str = ""
    status: str = "ok"
    error: str | None = None
    success: bool = False
    length: int = 0
    max_steps: int = 0
    target_object: str = ""
    ee_pos: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    ee_vel: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))
    gripper: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    target_pose: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))
    destination_pose: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))
    grasped: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    frames: np.ndarray | None = None
    attempts: int = 1
    wall_s: float = 0.0

    @property
    def key(self) -> str:
        """``{task}__{condition}__{seed}``: the episode's file name stem."""
        return episode_key(self.task, self.condition, self.seed)

    def arrays(self) -> dict[str, np.ndarray]:
        """The trajectories and traces as named arrays (what goes to safetensors)."""
        out = {name: getattr(self, name) for name in ARRAY_FIELDS}
        out.update({f"trace.{k}": v for k, v in self.traces.items()})
        return out


def episode_key(task: str, condition: str, seed: int) -> str:
    return f"{task}__{condition}__{seed}"


def crashed_record(task: str, condition: str, seed: int, error: str, attempts: int = 1) -> EpisodeRecord:
    """The record of an episode that could not be run."""
    return EpisodeRecord(task, condition, int(seed), status="crashed", error=error, attempts=attempts)


def run_episode(
    policy: Policy,
    env,
    seed: int,
    condition: Condition | None = None,
    *,
    resources: Resources | None = None,
    reference: float | None = None,
    frames: str | None = None,
    max_steps: int | None = None,
) -> EpisodeRecord:
    """Run ``policy`` for one episode of ``env`` (made by :func:`envs.make`) under ``condition``.

    Args:
        policy: any object with ``predict_action`` (:mod:`arrcoc_steer.eval.policies`).
        env: the task's env; made with ``render_cameras=False`` only for policies that need no images.
        seed: the env seed (layout, start pose, paraphrase); also seeds the global RNGs.
        condition: what to do to the policy (default: unsteered).
        resources: loaded files and helpers to reuse across episodes.
        reference: the unsteered speed (m/s) closed-loop conditions hold a multiple of.
        frames: ``"agentview"`` or ``"wrist"`` to keep that camera's frames (for videos).
        max_steps: stop earlier than the env's own time limit.
    """
    if frames is not None and frames not in FRAME_CAMERAS:
        raise ConfigError(f"frames must be None or one of {FRAME_CAMERAS}, got {frames!r}")
    policy, condition = as_policy(policy), condition or Unsteered()
    started = time.perf_counter()
    runtime = condition.runtime(policy, resources or Resources(), seed=int(seed), reference=reference)
    obs, info = _reset(env, int(seed), runtime)
    _seed_everything(int(seed))
    if callable(getattr(policy, "bind_env", None)):
        policy.bind_env(env)
    if callable(getattr(policy, "reset", None)):
        policy.reset()

    u = env.unwrapped
    limit = min(u.max_episode_steps, max_steps) if max_steps else u.max_episode_steps
    rec = _Recorder(info, frames, obs)
    failure = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_suppress_silent_steer_if(lambda: failure is not None))
        stack.enter_context(runtime.steering())
        for _ in range(limit):
            action, failure = _act(policy, runtime, obs, info["instruction"])
            if failure is not None:
                break
            obs, _, terminated, truncated, info = env.step(action)
            runtime.after_step(rec.step(action, info, obs))
            if terminated or truncated:
                break

    return rec.finish(
        task=u.task.name, condition=condition.name, seed=int(seed), max_steps=limit,
        status="ok" if failure is None else "policy_error", error=failure,
        traces=runtime.traces(), notes=runtime.notes(), wall_s=time.perf_counter() - started,
    )  # fmt: skip


def _reset(env, seed: int, runtime: Runtime):
    obs, info = env.reset(seed=seed)
    instruction = runtime.instruction(info["instruction"])
    if instruction != info["instruction"]:
        obs, info = env.reset(seed=seed, options={"instruction": instruction})
    return obs, info


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:  # a torch policy has imported it; others need not pay for the import
        sys.modules["torch"].manual_seed(seed)


def _act(policy: Policy, runtime: Runtime, obs: dict, instruction: str) -> tuple[np.ndarray | None, str | None]:
    """The policy's checked action for ``obs``, or the reason it has none."""
    seen = runtime.observation(obs)
    kwargs = runtime.step_kwargs(seen, instruction)
    try:
        raw = policy.predict_action(seen, instruction, **kwargs)
    except Exception as e:  # the policy's own failure ends the episode, not the sweep
        return None, f"policy raised {type(e).__name__}: {e}"
    try:
        action = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return None, f"policy returned {type(raw).__name__}, not 7 numbers ({e})"
    if action.shape != (7,):
        return None, f"policy returned an action of shape {action.shape}, expected (7,)"
    if not np.all(np.isfinite(action)):
        return None, f"policy returned NaN or inf at index {np.flatnonzero(~np.isfinite(action)).tolist()}"
    return action.astype(np.float32), None


@contextlib.contextmanager
def _suppress_silent_steer_if(failed):
    """A steer that never fired is an error -- unless the policy failed before its first call."""
    try:
        yield
    except SteeringError:
        if not failed():
            raise


class _Recorder:
    """Appends the per-step state the metrics need; builds the :class:`EpisodeRecord`."""

    def __init__(self, info: dict, frames: str | None, obs: dict):
        self.target = info["target_object"]
        self.destination = info.get("destination") if info.get("destination") in info["object_poses"] else None
        self.instruction = info["instruction"]
        self.camera = frames
        keys = ("ee_pos", "ee_vel", "gripper", "target_pose", "destination_pose", "grasped")
        self.rows: dict[str, list] = {k: [] for k in keys}
        self.actions: list[np.ndarray] = []
        self.frames: list[np.ndarray] = []
        self.success = False
        self._add(info, obs)

    def _add(self, info: dict, obs: dict) -> None:
        self.rows["ee_pos"].append(info["ee_pos"])
        self.rows["ee_vel"].append(info["ee_vel"])
        self.rows["gripper"].append(info["gripper"])
        self.rows["target_pose"].append(info["object_poses"][self.target])
        if self.destination is not None:
            self.rows["destination_pose"].append(info["object_poses"][self.destination])
        self.rows["grasped"].append(info["grasped"] == self.target)
        if self.camera is not None:
            self.frames.append(np.asarray(obs[self.camera]))

    def step(self, action: np.ndarray, info: dict, obs: dict) -> float:
        """Record one env step; returns the end-effector speed over it (m/s)."""
        self.actions.append(action)
        self._add(info, obs)
        self.success = bool(info["success"])
        p = self.rows["ee_pos"]
        return float(np.linalg.norm(np.asarray(p[-1]) - np.asarray(p[-2])) * CONTROL_HZ)

    def finish(self, **fields) -> EpisodeRecord:
        arrays = {k: np.asarray(v, np.float32) for k, v in self.rows.items() if k != "grasped"}
        arrays["destination_pose"] = arrays["destination_pose"].reshape(-1, 7)  # (0, 7) without a destination
        return EpisodeRecord(
            instruction=self.instruction, success=self.success, length=len(self.actions),
            target_object=self.target, grasped=np.asarray(self.rows["grasped"], bool),
            actions=np.asarray(self.actions, np.float32).reshape(-1, 7),
            frames=np.stack(self.frames) if self.frames else None, **arrays, **fields,
        )  # fmt: skip
