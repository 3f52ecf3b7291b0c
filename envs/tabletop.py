"""The gymnasium environment: a floating two-finger hand manipulating blocks on a table (MuJoCo).

One class, :class:`TabletopEnv`, serves every task of :mod:`envs.tasks`; its docstring is the spec.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from arrcoc_steer.errors import ConfigError

from .modifiers import Modifiers, parse
from .rendering import CameraRenderer
from .scene import BLOCK_HALF, CAMERAS, FINGER_MAX, GRIPPER_BODIES, PHYSICS_DT, TCP_OFFSET, build_mjcf
from .tasks import TASKS, TaskSpec, WorldState, subgoal_done

MAX_TRANSLATION = 0.03  # metres per step at |action| = 1
MAX_ROTATION = 0.2  # radians per step at |action| = 1
CONTROL_HZ = 10
SUBSTEPS = int(round(1.0 / (CONTROL_HZ * PHYSICS_DT)))  # 25
# bounds of the commanded tool-centre-point position (metres)
TCP_LOW = np.array([-0.40, -0.36, -0.01])
TCP_HIGH = np.array([0.40, 0.40, 0.45])
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"
INSTRUCTION_MAX = 256


def contract_spaces(image_size: int) -> tuple[spaces.Dict, spaces.Box]:
    """LIBERO's observation/action contract, shared by every backend: two RGB cameras, a 9-D
    proprioceptive state (ee xyz, ee quat wxyz, 2 finger joints), the instruction; 7-D delta-EE action."""
    image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    observation = spaces.Dict({
        "agentview": image,
        "wrist": image,
        "state": spaces.Box(-np.inf, np.inf, (9,), np.float32),
        "instruction": spaces.Text(INSTRUCTION_MAX, charset=INSTRUCTION_CHARSET),
    })  # fmt: skip
    return observation, spaces.Box(-1.0, 1.0, (7,), np.float32)
MAX_QVEL = 1e3  # |qvel| beyond this counts as a physics blow-up
_BAD_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADCTRL,
)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def _axis_angle_quat(rotvec: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    mujoco.mju_axisAngle2Quat(out, rotvec / angle, angle)
    return out


class TabletopEnv(gym.Env):
    """Tabletop manipulation with a floating two-finger hand, LIBERO-style (MuJoCo, 10 Hz).

    ## Description
    A dynamic hand (welded to a mocap target, fingers on force-limited slide joints) must do what the
    natural-language instruction says with blocks, a tray, a plate and a green zone on a table
    (:mod:`envs.tasks` lists the tasks and their success predicates). Object positions are random per
    episode. Grasping is simulated by friction only. Control runs at 10 Hz; each step holds the
    command for ``SUBSTEPS`` = 25 physics steps of 4 ms (implicit-fast integrator, elliptic friction
    cones), which the scripted expert solves as reliably as 50 steps of 2 ms at half the cost.

    ## Action space
    ``Box(-1, 1, (7,), float32)``: ``(dx, dy, dz, droll, dpitch, dyaw, gripper)``. The first three move
    the tool centre point (between the finger tips) by up to ``MAX_TRANSLATION`` = 0.03 m per step,
    in the world frame, relative to the CURRENT end-effector pose (no wind-up when blocked); the next
    three rotate the hand by up to ``MAX_ROTATION`` = 0.2 rad per step (axis-angle, world frame);
    ``gripper`` -1 opens, +1 closes (LIBERO's convention; values in between set intermediate finger
    targets). Finite values outside [-1, 1] are clipped; a wrong shape, NaN or inf raises
    :class:`~arrcoc_steer.errors.ConfigError` and leaves the simulation untouched.
    World axes: +x right, +y away from the agentview camera, +z up; the table top is z = 0.

    ## Observation space
    ``Dict``:
      * ``agentview``: ``Box(0, 255, (H, W, 3), uint8)``, a fixed camera in front of and above the table.
      * ``wrist``: ``Box(0, 255, (H, W, 3), uint8)``, on the hand, looking down between the fingers.
      * ``state``: ``Box(-inf, inf, (9,), float32)``: end-effector xyz (m), end-effector quaternion
        wxyz (w >= 0), the two finger joint positions (m, 0 closed .. 0.045 open; half the gap).
      * ``instruction``: ``Text(max_length=256)``: a paraphrase of the task plus modifier phrases.
    Images are upright (row 0 is the top), ``H = W = image_size``.

    ## Rewards
    Sparse: 1.0 on the step the task succeeds, else 0.0.

    ## Episode end
    ``terminated`` when the task's success predicate holds. ``truncated`` after ``max_episode_steps``
    (the task's default, about 2.5x the scripted expert's length) or when the physics becomes
    unstable (``info["physics_unstable"] = True``; the observation is then that of the last good state).

    ## Info (privileged, for analysis)
    ``ee_pos`` (3,), ``ee_quat`` (4,), ``ee_vel`` (3,) linear m/s, ``gripper`` (2,) finger positions,
    ``object_poses`` {name: (7,) pos + quat wxyz}, ``object_vels`` {name: (6,) linear + angular},
    ``success``, ``subgoals`` (list of str), ``subgoals_done`` (list of bool), ``task``, ``suite``,
    ``instruction``, ``target_object`` (object of the first subgoal), ``destination`` (its container or
    None), ``grasped`` (name of the block held by both fingers, or None), ``modifiers`` (dict),
    ``physics_unstable``, ``step``, and ``segmentation`` ({camera: {label: bool (H, W)}}) when made
    with ``segmentation=True``.

    ## Arguments
    * ``task``: a task name from :data:`envs.TASKS`.
    * ``image_size`` (128): side of both camera images, in pixels.
    * ``render_mode`` (None): ``"rgb_array"`` makes :meth:`render` return the agentview frame.
    * ``max_episode_steps`` (None): overrides the task's time limit.
    * ``random_modifiers`` (False): sample speed / height / care modifiers at each reset (default:
      neutral instruction, no modifiers).
    * ``segmentation`` (False): add per-camera segmentation masks to ``info``.
    * ``render_cameras`` (True): False skips rendering and returns black images (fast privileged-state
      rollouts, e.g. evaluating the scripted expert).

    ## Reset options
    ``reset(seed=..., options={"instruction": str | None, "modifiers": Modifiers | dict | None,
    "paraphrase": int | None})``. An explicit instruction without modifiers is parsed for modifier
    words (:func:`envs.modifiers.parse`); explicit modifiers are rendered into the paraphrase.

    ## Version history
    * v0: initial release.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        task: str,
        image_size: int = 128,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        random_modifiers: bool = False,
        segmentation: bool = False,
        render_cameras: bool = True,
    ):
        from . import get_task  # late import: envs/__init__ imports this module

        self.task: TaskSpec = get_task(task)
        if not (isinstance(image_size, (int, np.integer)) and 16 <= image_size <= 1024):
            raise ConfigError(f"image_size must be an int in 16..1024, got {image_size!r}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise ConfigError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps or self.task.max_episode_steps)
        self.random_modifiers = bool(random_modifiers)
        self.with_segmentation = bool(segmentation)
        self.render_cameras = bool(render_cameras)

        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.task.objects, self.image_size))
        self.data = mujoco.MjData(self.model)
        self._index_model()

        s = self.image_size
        self.observation_space, self.action_space = contract_spaces(s)

        self._renderer = CameraRenderer(self.model, s) if (self.render_cameras or segmentation) else None
        self._state_spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self._good_state = np.empty(mujoco.mj_stateSize(self.model, self._state_spec))
        self._last_obs: dict[str, Any] | None = None
        self._steps = 0
        self.modifiers = Modifiers()
        self.instruction = ""
        self.subgoals = self.task.subgoals
        self.layout: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ model bookkeeping
    def _index_model(self) -> None:
        m = self.model
        self._tcp = m.site("tcp").id
        self._hand = m.body("hand").id
        self._hand_qadr = m.jnt_qposadr[m.body("hand").jntadr[0]]
        self._hand_vadr = m.jnt_dofadr[m.body("hand").jntadr[0]]
        self._target_mocap = m.body("hand_target").mocapid[0]
        self._finger_qadr = [m.jnt_qposadr[m.joint(f"finger_{s}").id] for s in ("left", "right")]
        self._finger_bodies = {m.body(f"finger_{s}").id: f"finger_{s}" for s in ("left", "right")}
        self.blocks = [o.name for o in self.task.objects if o.movable]
        self.containers = [o.name for o in self.task.objects if not o.movable]
        self._block_qadr = {b: m.jnt_qposadr[m.body(b).jntadr[0]] for b in self.blocks}
        self._block_vadr = {b: m.jnt_dofadr[m.body(b).jntadr[0]] for b in self.blocks}
        self._block_body = {m.body(b).id: b for b in self.blocks}
        self._mocap = {c: m.body(c).mocapid[0] for c in self.containers}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"instruction", "modifiers", "paraphrase"}
        if unknown:
            raise ConfigError(f"unknown reset option(s) {sorted(unknown)}; valid: instruction, modifiers, paraphrase")
        rng = self.np_random
        # the scene is drawn first, so one seed gives one scene whatever the instruction options
        layout = self.task.layout(rng)
        hand_xyz = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.10, 0.0), rng.uniform(0.14, 0.18)])
        hand_yaw = rng.uniform(-0.15, 0.15)
        self.modifiers, self.instruction = self._make_instruction(rng, options)  # validates options
        self.layout, self.subgoals = layout, self.task.resolve(layout)
        self._place_everything(hand_xyz, hand_yaw)
        self._steps = 0
        self._max_bottom = {b: self._block_pos(b)[2] - BLOCK_HALF for b in self.blocks}
        obs = self._observation()
        return obs, self._info(success=False, unstable=False)

    def step(self, action):
        a = self._check_action(action)  # raises before anything is changed
        self._apply_action(a)
        stable = self._simulate()
        self._steps += 1
        for b in self.blocks:
            self._max_bottom[b] = max(self._max_bottom[b], self._block_pos(b)[2] - BLOCK_HALF)
        world = self.world_state()
        done = [subgoal_done(sg, world) for sg in self.subgoals]
        success = stable and all(done)
        reward = 1.0 if success else 0.0
        terminated = bool(success)
        truncated = (not stable) or self._steps >= self.max_episode_steps
        # after a blow-up the state was restored: repeat the last good observation exactly
        obs = self._observation() if stable or self._last_obs is None else self._copy_obs(self._last_obs)
        return obs, reward, terminated, bool(truncated), self._info(success, not stable, world, done)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._last_obs is None or not self.render_cameras:
            return self._renderer_or_raise().render(self.data, "agentview")
        return self._last_obs["agentview"].copy()

    def close(self):
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ reset helpers
    def _make_instruction(self, rng: np.random.Generator, options: dict) -> tuple[Modifiers, str]:
        phrases = self.task.paraphrases
        k = options.get("paraphrase")
        if k is None:
            k = int(rng.integers(len(phrases)))
        elif not (isinstance(k, (int, np.integer)) and 0 <= k < len(phrases)):
            raise ConfigError(f"paraphrase must be an int in 0..{len(phrases) - 1} for {self.task.name}, got {k!r}")
        text = options.get("instruction")
        if options.get("modifiers") is not None:
            mods = Modifiers.from_any(options["modifiers"])
        elif text is not None:
            mods = parse(str(text))
        elif self.random_modifiers:
            mods = Modifiers.sample(rng)
        else:
            mods = Modifiers()
        if text is None:
            text = mods.render(phrases[k], rng)
        self._check_instruction(text)
        return mods, text

    @staticmethod
    def _check_instruction(text: Any) -> None:
        if not isinstance(text, str) or not 1 <= len(text) <= INSTRUCTION_MAX:
            raise ConfigError(f"instruction must be a str of 1..{INSTRUCTION_MAX} characters, got {text!r}")
        bad = sorted(set(text) - set(INSTRUCTION_CHARSET))
        if bad:
            raise ConfigError(f"instruction contains characters outside the observation charset: {bad}")

    def _place_everything(self, hand_xyz: np.ndarray, hand_yaw: float) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for name, (x, y, yaw) in self.layout.items():
            quat = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
            if name in self._block_qadr:
                a = self._block_qadr[name]
                d.qpos[a : a + 7] = [x, y, BLOCK_HALF, *quat]
            else:
                d.mocap_pos[self._mocap[name]] = [x, y, 0.0]
                d.mocap_quat[self._mocap[name]] = quat
        hand_quat = np.array([np.cos(hand_yaw / 2), 0.0, 0.0, np.sin(hand_yaw / 2)])
        hand_pos = self._hand_origin(hand_xyz, hand_quat)
        a = self._hand_qadr
        d.qpos[a : a + 7] = [*hand_pos, *hand_quat]
        d.mocap_pos[self._target_mocap] = hand_pos
        d.mocap_quat[self._target_mocap] = hand_quat
        for q in self._finger_qadr:
            d.qpos[q] = FINGER_MAX
        d.ctrl[:] = FINGER_MAX
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=SUBSTEPS)  # let contacts settle for 0.1 s
        mujoco.mj_getState(m, d, self._good_state, self._state_spec)

    # ------------------------------------------------------------------ step helpers
    @staticmethod
    def _check_action(action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"action must be 7 numbers, got {action!r} ({e})") from None
        if a.shape != (7,):
            raise ConfigError(f"action must have shape (7,), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            bad = np.flatnonzero(~np.isfinite(a)).tolist()
            raise ConfigError(f"action contains NaN or inf at index {bad}: {a.tolist()}")
        return np.clip(a, -1.0, 1.0)

    def _hand_origin(self, tcp_pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat)
        return tcp_pos - rot.reshape(3, 3) @ np.array([0.0, 0.0, TCP_OFFSET])

    def _apply_action(self, a: np.ndarray) -> None:
        d = self.data
        target = np.clip(self.ee_pos() + a[:3] * MAX_TRANSLATION, TCP_LOW, TCP_HIGH)
        quat = _quat_mul(_axis_angle_quat(a[3:6] * MAX_ROTATION), d.xquat[self._hand])
        quat /= np.linalg.norm(quat)
        d.mocap_pos[self._target_mocap] = self._hand_origin(target, quat)
        d.mocap_quat[self._target_mocap] = quat
        d.ctrl[:] = FINGER_MAX * (1.0 - a[6]) / 2.0

    def _simulate(self) -> bool:
        """Advance 0.1 s. On a blow-up restore the last good state and return False."""
        m, d = self.model, self.data
        before = [int(d.warning[w].number) for w in _BAD_WARNINGS]
        mujoco.mj_step(m, d, nstep=SUBSTEPS)
        warned = any(int(d.warning[w].number) > n for w, n in zip(_BAD_WARNINGS, before))
        finite = np.all(np.isfinite(d.qpos)) and np.all(np.isfinite(d.qvel))
        if warned or not finite or np.max(np.abs(d.qvel)) > MAX_QVEL:
            mujoco.mj_setState(m, d, self._good_state, self._state_spec)
            d.xfrc_applied[:] = 0.0
            d.qfrc_applied[:] = 0.0
            mujoco.mj_forward(m, d)
            return False
        mujoco.mj_getState(m, d, self._good_state, self._state_spec)
        return True

    # ------------------------------------------------------------------ state readers (privileged)
    def ee_pos(self) -> np.ndarray:
        """Tool centre point position (3,), world frame."""
        return self.data.site_xpos[self._tcp].copy()

    def ee_quat(self) -> np.ndarray:
        """Hand orientation, quaternion wxyz with w >= 0."""
        q = self.data.xquat[self._hand].copy()
        return -q if q[0] < 0 else q

    def ee_vel(self) -> np.ndarray:
        """Linear velocity (3,) of the tool centre point, m/s, world frame."""
        v = np.empty(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self._tcp, v, 0)
        return v[3:].copy()

    def finger_qpos(self) -> np.ndarray:
        return self.data.qpos[self._finger_qadr].copy()

    def _block_pos(self, name: str) -> np.ndarray:
        a = self._block_qadr[name]
        return self.data.qpos[a : a + 3].copy()

    def object_pose(self, name: str) -> np.ndarray:
        """(7,) position + quaternion wxyz of an object (containers: base centre on the table)."""
        if name in self._block_qadr:
            a = self._block_qadr[name]
            return self.data.qpos[a : a + 7].copy()
        i = self._mocap[name]
        return np.concatenate([self.data.mocap_pos[i], self.data.mocap_quat[i]])

    def object_vel(self, name: str) -> np.ndarray:
        """(6,) linear + angular velocity (world frame); zeros for containers."""
        if name not in self._block_vadr:
            return np.zeros(6)
        a = self._block_vadr[name]
        return self.data.qvel[a : a + 6].copy()

    def touching(self) -> dict[str, set]:
        """Block name -> set of finger names in contact with it."""
        out: dict[str, set] = {b: set() for b in self.blocks}
        m, d = self.model, self.data
        for c in d.contact[: d.ncon]:
            b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
            for x, y in ((b1, b2), (b2, b1)):
                if x in self._block_body and y in self._finger_bodies:
                    out[self._block_body[x]].add(self._finger_bodies[y])
        return out

    def grasped_object(self) -> str | None:
        """The block both fingers touch, or None."""
        held = [b for b, f in self.touching().items() if len(f) == 2]
        return held[0] if held else None

    def world_state(self) -> WorldState:
        pos = {n: self.object_pose(n)[:3] for n in self.blocks + self.containers}
        vel = {b: self.object_vel(b)[:3] for b in self.blocks}
        return WorldState(pos, vel, self.touching(), dict(self._max_bottom))

    def subgoals_done(self) -> list[bool]:
        w = self.world_state()
        return [subgoal_done(sg, w) for sg in self.subgoals]

    # ------------------------------------------------------------------ observation and info
    def _observation(self) -> dict[str, Any]:
        if self.render_cameras:
            r = self._renderer_or_raise()
            images = {c: r.render(self.data, c) for c in CAMERAS}
        else:
            images = {c: np.zeros((self.image_size,) * 2 + (3,), np.uint8) for c in CAMERAS}
        state = np.concatenate([self.ee_pos(), self.ee_quat(), self.finger_qpos()]).astype(np.float32)
        obs = {**images, "state": state, "instruction": self.instruction}
        self._last_obs = obs
        return obs

    @staticmethod
    def _copy_obs(obs: dict[str, Any]) -> dict[str, Any]:
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in obs.items()}

    def _info(self, success: bool, unstable: bool, world: WorldState | None = None, done=None) -> dict[str, Any]:
        names = self.blocks + self.containers
        first = self.subgoals[0]
        world = world or self.world_state()
        done = done if done is not None else [subgoal_done(sg, world) for sg in self.subgoals]
        held = [b for b, f in world.touching.items() if len(f) == 2]
        info = {
            "ee_pos": self.ee_pos(),
            "ee_quat": self.ee_quat(),
            "ee_vel": self.ee_vel(),
            "gripper": self.finger_qpos(),
            "object_poses": {n: self.object_pose(n) for n in names},
            "object_vels": {n: self.object_vel(n) for n in names},
            "success": bool(success),
            "subgoals": [sg.describe() for sg in self.subgoals],
            "subgoals_done": done,
            "task": self.task.name,
            "suite": self.task.suite,
            "instruction": self.instruction,
            "target_object": first.obj,
            "destination": first.dest,
            "grasped": held[0] if held else None,
            "modifiers": self.modifiers.to_dict(),
            "physics_unstable": bool(unstable),
            "step": self._steps,
        }
        if self.with_segmentation:
            info["segmentation"] = {c: self.segmentation(c) for c in CAMERAS}
        return info

    # ------------------------------------------------------------------ cameras
    def _renderer_or_raise(self) -> CameraRenderer:
        if self._renderer is None:
            self._renderer = CameraRenderer(self.model, self.image_size)
        return self._renderer

    def segmentation(self, camera: str) -> dict[str, np.ndarray]:
        """Boolean masks (H, W) seen by ``camera``: ``target``, ``gripper``, ``destination`` (empty
        when the first subgoal has none), ``table`` and one per object name."""
        if camera not in CAMERAS:
            raise ConfigError(f"camera must be one of {CAMERAS}, got {camera!r}")
        body_of_pixel = self._renderer_or_raise().segment_bodies(self.data, camera)  # (H, W) body id, -1
        m = self.model
        masks = {n: body_of_pixel == m.body(n).id for n in self.blocks + self.containers}
        masks["gripper"] = np.isin(body_of_pixel, [m.body(b).id for b in GRIPPER_BODIES])
        masks["table"] = body_of_pixel == 0  # world body: table (and floor)
        first = self.subgoals[0]
        masks["target"] = masks[first.obj].copy()
        masks["destination"] = masks[first.dest].copy() if first.dest else np.zeros_like(masks["table"])
        return masks

    def camera_matrix(self, camera: str) -> np.ndarray:
        """3x4 projection P from world to pixel: ``[u*s, v*s, s] = P @ [x, y, z, 1]``.

        ``u`` is the column and ``v`` the row (row 0 at the top) in continuous pixel coordinates: pixel
        ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``. Uses the current camera pose (the wrist
        camera moves with the hand).
        """
        if camera not in CAMERAS:
            raise ConfigError(f"camera must be one of {CAMERAS}, got {camera!r}")
        m, d = self.model, self.data
        cid = m.camera(camera).id
        R = d.cam_xmat[cid].reshape(3, 3)  # columns: camera x (right), y (up), z (backward) in world
        c = d.cam_xpos[cid]
        f = 0.5 * self.image_size / np.tan(np.deg2rad(m.cam_fovy[cid]) / 2)
        half = self.image_size / 2
        K = np.array([[f, 0.0, -half], [0.0, -f, -half], [0.0, 0.0, -1.0]])
        return K @ np.concatenate([R.T, (-R.T @ c)[:, None]], axis=1)

    def camera_intrinsics(self, camera: str) -> np.ndarray:
        """3x3 pinhole intrinsics K (OpenCV convention: x right, y down, z forward)."""
        if camera not in CAMERAS:
            raise ConfigError(f"camera must be one of {CAMERAS}, got {camera!r}")
        f = 0.5 * self.image_size / np.tan(np.deg2rad(self.model.cam_fovy[self.model.camera(camera).id]) / 2)
        h = self.image_size / 2
        return np.array([[f, 0.0, h], [0.0, f, h], [0.0, 0.0, 1.0]])

    def camera_extrinsics(self, camera: str) -> np.ndarray:
        """4x4 world-to-camera transform (OpenCV convention: x right, y down, z forward)."""
        if camera not in CAMERAS:
            raise ConfigError(f"camera must be one of {CAMERAS}, got {camera!r}")
        cid = self.model.camera(camera).id
        R = self.data.cam_xmat[cid].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        T = np.eye(4)
        T[:3, :3] = R.T
        T[:3, 3] = -R.T @ self.data.cam_xpos[cid]
        return T

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
