"""Scripted experts: a waypoint plan per subgoal, executed with a speed-limited proportional controller.

The expert reads privileged state from ``env.unwrapped`` (object poses, finger contacts) and returns
actions in the env's 7-D action space. Each subgoal of the task (:mod:`envs.tasks`) is compiled into
phases, and each phase is one waypoint with a gripper command:

* pick (``in``, ``on``, ``lift``): ``reach`` above the block (gripper open, yaw aligned with the block's
  faces) -> ``descend`` to the block's centre -> ``grasp`` (close, wait for both fingers) -> ``lift`` to
  the carry height; then for ``lift`` ``hold_up``, for ``in`` / ``on``: ``carry`` above the destination
  (yaw back to 0) -> ``lower`` -> ``release`` (open) -> ``retreat`` upwards.
* push: ``push_reach`` above a point behind the block (gripper closed, finger pads facing the push
  direction) -> ``push_descend`` -> ``push`` the block onto the zone, re-aiming every step ->
  ``push_retreat``; re-approach when the block slips sideways.

A failed grasp or a dropped block sends the expert back to ``reach``. Actions are a smooth function of
(object positions, gripper state, phase): translation = (waypoint - tool centre point) / 0.03 m,
clipped to the norm the speed modifier allows; rotation = axis-angle error / 0.2 rad, clipped to 1.

Modifiers (:mod:`envs.modifiers`): ``speed`` caps the translation command at 0.3 / 0.6 / 1.0 of the
maximum step; ``height`` sets the carry / lift height of the tool centre point (0.09 / 0.16 / 0.26 m);
``care`` multiplies the speed by 0.35 within 5 cm of contact (final descent before the grasp and the
placement) and releases 3 mm instead of 1 cm above the surface.

Command line: ``python -m envs.expert --episodes 100`` prints per-task and per-suite success and the
speed and height effects of the modifiers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .modifiers import Modifiers
from .scene import BLOCK_HALF, PLATE_HEIGHT, TRAY_FLOOR
from .tabletop import MAX_ROTATION, MAX_TRANSLATION
from .tasks import SUITES, TASKS, Subgoal

SPEED_SCALE = {"slow": 0.3, "normal": 0.6, "fast": 1.0}
CARRY_HEIGHT = {"low": 0.09, "normal": 0.16, "high": 0.26}  # tool centre point above the table (m)
CARE_SCALE = 0.35
CARE_RADIUS = 0.05
HOVER_Z = 0.10  # approach height above the table: the finger tips clear every object
PUSH_Z = 0.022  # tool centre point height while pushing (finger tips 7 mm above the table)
PUSH_CONTACT = 0.034  # hand-to-block-centre distance along the push direction at contact
SLOT = 0.035  # two blocks in one tray go to +-SLOT along y
OPEN, CLOSE = -1.0, 1.0
WINDOW = 15  # steps of the length-matched speed window (shorter than the fastest episode)


def _yaw_of(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _wrap(angle: float, period: float) -> float:
    """``angle`` shifted by multiples of ``period`` into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


def _rot_error(target_yaw: float, quat: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking ``quat`` to an upright hand with yaw ``target_yaw``."""
    qt = np.array([np.cos(target_yaw / 2), 0.0, 0.0, np.sin(target_yaw / 2)])
    qc = np.array([quat[0], -quat[1], -quat[2], -quat[3]])
    w1, v1, w2, v2 = qt[0], qt[1:], qc[0], qc[1:]
    e = np.concatenate([[w1 * w2 - v1 @ v2], w1 * v2 + w2 * v1 + np.cross(v1, v2)])
    if e[0] < 0:
        e = -e
    s = np.linalg.norm(e[1:])
    return np.zeros(3) if s < 1e-12 else e[1:] / s * 2 * np.arctan2(s, e[0])


@dataclass
class ScriptedExpert:
    """Waypoint expert for any task of :mod:`envs.tasks`; call :meth:`reset` after ``env.reset``.

    >>> import envs
    >>> env = envs.make("LiftRedBlock", render_cameras=False)
    >>> obs, info = env.reset(seed=3)
    >>> expert = ScriptedExpert(env)
    >>> for _ in range(120):
    ...     obs, reward, terminated, truncated, info = env.step(expert.act())
    ...     if terminated or truncated:
    ...         break
    >>> info["success"]
    True
    >>> env.close()

    Attributes:
        env: the env (wrapped or not); state is read from ``env.unwrapped``.
        noise: std of Gaussian noise added to the translation command (action units); 0 = off.
        seed: seed of the noise generator.
    """

    env: object
    noise: float = 0.0
    seed: int | None = None
    phase: str = field(default="reach", init=False)
    subgoal_index: int = field(default=0, init=False)

    def __post_init__(self):
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Start the plan from the first subgoal (call after ``env.reset``)."""
        self._rng = np.random.default_rng(self.seed)
        self.subgoal_index = 0
        self._t = 0
        self._anchor = None
        self._grip = OPEN
        u = self.env.unwrapped
        self.phase = self._first_phase(u.subgoals[0]) if getattr(u, "subgoals", None) else "reach"

    def replan(self) -> None:
        """Take over from whatever state the scene is in (another policy drove until now): resume the
        plan at its first subgoal not done, with the block already in hand carried on from where it
        is, else approached afresh. What DAgger-style data needs: the expert's correction from states
        a cloned policy reaches and the expert alone never does."""
        u = self.env.unwrapped
        done = u.subgoals_done()
        self.subgoal_index = next((i for i, ok in enumerate(done) if not ok), len(done))
        if self.subgoal_index == len(done):
            return self._go("done")
        sg = u.subgoals[self.subgoal_index]
        self._grip = CLOSE if u.finger_qpos().max() < 0.03 else OPEN
        self._go("lift" if sg.kind != "push" and self._holding(u, sg.obj) else self._first_phase(sg))

    def act(self, observation=None) -> np.ndarray:
        """The next action (7,) float32; ``observation`` is unused (the expert is privileged)."""
        u = self.env.unwrapped
        action = None
        for _ in range(6):  # a phase may hand over to the next one within the same step
            if self.subgoal_index >= len(u.subgoals):
                action = self._hold()
                break
            action = getattr(self, f"_{self.phase}")(u, u.subgoals[self.subgoal_index])
            if action is not None:
                break
        if action is None:
            action = self._hold()
        self._t += 1
        if self.noise > 0:
            action[:3] += self._rng.normal(0.0, self.noise, 3)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ helpers
    @property
    def _mods(self) -> Modifiers:
        return self.env.unwrapped.modifiers

    def _go(self, phase: str) -> None:
        self.phase, self._t, self._anchor = phase, -1, None

    def _first_phase(self, sg: Subgoal) -> str:
        return "push_reach" if sg.kind == "push" else "reach"

    def _next_subgoal(self, u) -> None:
        self.subgoal_index += 1
        if self.subgoal_index < len(u.subgoals):
            self._go(self._first_phase(u.subgoals[self.subgoal_index]))
        else:
            self._go("done")

    def _move(self, u, target, yaw: float, grip: float, speed: float | None = None, gain: float = 1.0):
        """Action toward ``target`` (tool centre point) and ``yaw``, with the gripper at ``grip``."""
        speed = SPEED_SCALE[self._mods.speed] if speed is None else speed
        step = gain * (np.asarray(target, float) - u.ee_pos()) / MAX_TRANSLATION
        n = np.linalg.norm(step)
        if n > speed:
            step *= speed / n
        rot = _rot_error(yaw, u.ee_quat()) / MAX_ROTATION
        r = np.linalg.norm(rot)
        if r > 1.0:
            rot /= r
        self._grip = grip
        return np.concatenate([step, rot, [grip]])

    def _careful(self, u, target) -> float:
        speed = SPEED_SCALE[self._mods.speed]
        if self._mods.care and np.linalg.norm(np.asarray(target) - u.ee_pos()) < CARE_RADIUS:
            speed *= CARE_SCALE
        return speed

    def _hold(self) -> np.ndarray:
        """Stay still, gripper unchanged (after the last subgoal, until the env terminates)."""
        return np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self._grip])

    def _close(self, u, target, tol: float) -> bool:
        return bool(np.linalg.norm(np.asarray(target) - u.ee_pos()) < tol)

    @staticmethod
    def _grasp_yaw(u, obj: str) -> float:
        """Hand yaw that puts the finger pads on two opposite faces of the block, nearest to 0."""
        return _wrap(_yaw_of(u.object_pose(obj)[3:]), np.pi / 2)

    def _carry_z(self) -> float:
        return CARRY_HEIGHT[self._mods.height]

    def _holding(self, u, obj: str) -> bool:
        return len(u.touching()[obj]) == 2

    # ------------------------------------------------------------------ pick phases
    def _reach(self, u, sg):
        o = u.object_pose(sg.obj)
        target = [o[0], o[1], HOVER_Z]
        yaw = self._grasp_yaw(u, sg.obj)
        if self._close(u, target, 0.01) and abs(_wrap(yaw - _yaw_of(u.ee_quat()), 2 * np.pi)) < 0.08:
            return self._go("descend")
        return self._move(u, target, yaw, OPEN)

    def _descend(self, u, sg):
        o = u.object_pose(sg.obj)
        target = [o[0], o[1], o[2] - 0.002]
        if np.linalg.norm(o[:2] - u.ee_pos()[:2]) > 0.02:
            return self._go("reach")  # the block moved: approach again
        if self._close(u, target, 0.004):
            return self._go("grasp")
        return self._move(u, target, self._grasp_yaw(u, sg.obj), OPEN, self._careful(u, target))

    def _grasp(self, u, sg):
        if self._anchor is None:
            self._anchor = u.ee_pos()
        if self._t >= 3 and self._holding(u, sg.obj):
            return self._go("lift")
        if self._t >= 3 and u.finger_qpos().max() < 0.012 or self._t > 10:
            return self._go("reach")  # closed on nothing: open and try again
        return self._move(u, self._anchor, _yaw_of(u.ee_quat()), CLOSE)

    def _lift(self, u, sg):
        if self._anchor is None:
            self._anchor = u.ee_pos()
        if not self._holding(u, sg.obj):
            return self._go("reach")
        target = [self._anchor[0], self._anchor[1], self._carry_z()]
        if self._close(u, target, 0.01):
            return self._go("hold_up" if sg.kind == "lift" else "carry")
        return self._move(u, target, _yaw_of(u.ee_quat()), CLOSE)

    def _hold_up(self, u, sg):
        if self._anchor is None:
            self._anchor = u.ee_pos()
        return self._move(u, self._anchor, _yaw_of(u.ee_quat()), CLOSE)

    # ------------------------------------------------------------------ place phases
    def _place_xy(self, u, sg) -> np.ndarray:
        c = u.object_pose(sg.dest)[:2].copy()
        same = [s for s in u.subgoals if s.kind == "in" and s.dest == sg.dest]
        if len(same) == 2:
            c[1] += SLOT * (-1 if same.index(sg) == 0 else 1)
        return c

    def _release_z(self, u, sg) -> float:
        surface = u.object_pose(sg.dest)[2] + (TRAY_FLOOR if sg.kind == "in" else PLATE_HEIGHT)
        return surface + BLOCK_HALF + (0.003 if self._mods.care else 0.01)

    def _carry(self, u, sg):
        if not self._holding(u, sg.obj):
            return self._go("reach")
        xy = self._place_xy(u, sg)
        target = [xy[0], xy[1], self._carry_z()]
        if self._close(u, target, 0.01) and abs(_yaw_of(u.ee_quat())) < 0.08:
            return self._go("lower")
        return self._move(u, target, 0.0, CLOSE)

    def _lower(self, u, sg):
        if not self._holding(u, sg.obj):
            return self._go("reach")
        xy = self._place_xy(u, sg)
        target = [xy[0], xy[1], self._release_z(u, sg)]
        if self._close(u, target, 0.005):
            return self._go("release")
        return self._move(u, target, 0.0, CLOSE, self._careful(u, target))

    def _release(self, u, sg):
        if self._anchor is None:
            self._anchor = u.ee_pos()
        if self._t >= 2 and not u.touching()[sg.obj] and u.finger_qpos().min() > 0.03:
            return self._go("retreat")
        return self._move(u, self._anchor, 0.0, OPEN)

    def _retreat(self, u, sg):
        if self._anchor is None:
            self._anchor = u.ee_pos()
        target = [self._anchor[0], self._anchor[1], max(HOVER_Z, self._anchor[2] + 0.06)]
        if self._close(u, target, 0.015):
            return self._next_subgoal(u)
        return self._move(u, target, 0.0, OPEN)

    # ------------------------------------------------------------------ push phases
    def _push_dir(self, u, sg) -> np.ndarray:
        d = u.object_pose(sg.dest)[:2] - u.object_pose(sg.obj)[:2]
        return d / max(np.linalg.norm(d), 1e-9)

    @staticmethod
    def _push_yaw(d: np.ndarray) -> float:
        """Hand yaw that makes the finger pads' faces (normal = hand x) face the push direction."""
        return _wrap(float(np.arctan2(d[1], d[0])), np.pi)

    def _pushed_enough(self, u, sg) -> bool:
        return bool(np.linalg.norm(u.object_pose(sg.dest)[:2] - u.object_pose(sg.obj)[:2]) < 0.015)

    def _push_reach(self, u, sg):
        if self._pushed_enough(u, sg):
            return self._next_subgoal(u)
        d = self._push_dir(u, sg)
        p = u.object_pose(sg.obj)[:2] - d * (PUSH_CONTACT + 0.03)
        target = [p[0], p[1], HOVER_Z]
        yaw = self._push_yaw(d)
        if self._close(u, target, 0.01) and abs(_wrap(yaw - _yaw_of(u.ee_quat()), np.pi)) < 0.08:
            return self._go("push_descend")
        return self._move(u, target, yaw, CLOSE)

    def _push_descend(self, u, sg):
        d = self._push_dir(u, sg)
        p = u.object_pose(sg.obj)[:2] - d * (PUSH_CONTACT + 0.03)
        target = [p[0], p[1], PUSH_Z]
        if self._close(u, target, 0.006):
            return self._go("push")
        return self._move(u, target, self._push_yaw(d), CLOSE, self._careful(u, target))

    def _push(self, u, sg):
        o = u.object_pose(sg.obj)[:2]
        d = self._push_dir(u, sg)
        rel = u.ee_pos()[:2] - o
        along, lateral = float(rel @ d), float(abs(rel[0] * d[1] - rel[1] * d[0]))
        if self._pushed_enough(u, sg):
            return self._go("push_retreat")
        if lateral > 0.02 or along > -0.015 or along < -0.12:
            return self._go("push_retreat")  # lost the block: lift off and approach again
        final = u.object_pose(sg.dest)[:2] - d * PUSH_CONTACT
        # aim at the line behind the block first, then along it
        target = [final[0], final[1], PUSH_Z]
        return self._move(u, target, self._push_yaw(d), CLOSE, gain=0.5)

    def _push_retreat(self, u, sg):
        if self._anchor is None:
            self._anchor = u.ee_pos()
        target = [self._anchor[0], self._anchor[1], HOVER_Z]
        if self._close(u, target, 0.015):
            if self._pushed_enough(u, sg):
                return self._next_subgoal(u)
            return self._go("push_reach")
        return self._move(u, target, _yaw_of(u.ee_quat()), CLOSE)

    def _done(self, u, sg):
        return self._hold()

# ---------------------------------------------------------------------------------------------
# evaluation
@dataclass
class EpisodeResult:
    """What one expert episode measured (speeds in m/s, heights in m above the table)."""

    task: str
    seed: int
    success: bool
    length: int
    mean_speed: float  # mean end-effector speed over the episode (finite differences at 10 Hz)
    mean_speed_window: float  # mean end-effector speed over the first WINDOW steps (length-matched)
    peak_object_height: float  # highest bottom of a block while held by both fingers
    peak_ee_height_held: float  # highest tool-centre-point z while holding a block


def run_episode(env, seed: int, modifiers=None, noise: float = 0.0, paraphrase=None) -> EpisodeResult:
    """Run the scripted expert for one episode on ``env`` (already made) and measure it.

    ``modifiers``: a Modifiers, a dict, None (neutral) or "random" (sampled from ``seed``)."""
    if isinstance(modifiers, str) and modifiers == "random":
        modifiers = Modifiers.sample(np.random.default_rng(seed))
    options = {"modifiers": modifiers, "paraphrase": paraphrase}
    obs, info = env.reset(seed=seed, options=options)
    expert = ScriptedExpert(env, noise=noise, seed=seed)
    u = env.unwrapped
    ee = [info["ee_pos"]]
    peak_obj, peak_ee = 0.0, 0.0
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        ee.append(info["ee_pos"])
        if info["grasped"] is not None:
            peak_obj = max(peak_obj, float(info["object_poses"][info["grasped"]][2] - BLOCK_HALF))
            peak_ee = max(peak_ee, float(info["ee_pos"][2]))
    speeds = np.linalg.norm(np.diff(np.array(ee), axis=0), axis=1) * u.metadata["render_fps"]
    return EpisodeResult(u.task.name, seed, bool(info["success"]), len(ee) - 1, float(speeds.mean()),
                         float(speeds[:WINDOW].mean()), peak_obj, peak_ee)  # fmt: skip


def evaluate_expert(
    tasks: list[str] | None = None,
    episodes: int = 100,
    seed: int = 10_000,
    modifiers: Modifiers | dict | str | None = None,
    noise: float = 0.0,
    progress: bool = True,
) -> dict:
    """Success of the scripted expert on ``tasks`` (default: all) over ``episodes`` fresh seeds each.

    Seeds are ``seed + i`` for episode ``i`` (the same seeds for every task). Images are not rendered.
    ``modifiers`` applies to every episode; "random" samples them per episode from its seed.
    Returns ``{"tasks": {name: {...}}, "suites": {suite: success rate}, "episodes": [EpisodeResult]}``
    where each task entry has ``success``, ``mean_length``, ``max_length``, ``mean_speed``,
    ``peak_object_height``.
    """
    import envs
    from tqdm.auto import tqdm

    names = list(tasks) if tasks is not None else envs.list_tasks()
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(names) * episodes, disable=not progress, desc="expert", leave=False)
    for name in names:
        env = envs.make(name, render_cameras=False)
        try:
            for i in range(episodes):
                results.append(run_episode(env, seed + i, modifiers, noise))
                bar.update()
        finally:
            env.close()
    bar.close()
    per_task = {}
    for name in names:
        rs = [r for r in results if r.task == name]
        per_task[name] = {
            "success": float(np.mean([r.success for r in rs])),
            "mean_length": float(np.mean([r.length for r in rs])),
            "max_length": int(max(r.length for r in rs)),
            "mean_speed": float(np.mean([r.mean_speed for r in rs])),
            "peak_object_height": float(np.mean([r.peak_object_height for r in rs])),
        }
    suites = {}
    for suite, members in SUITES.items():
        rs = [r.success for r in results if r.task in members]
        if rs:
            suites[suite] = float(np.mean(rs))
    return {"tasks": per_task, "suites": suites, "episodes": results}


def modifier_effects(tasks: list[str] | None = None, episodes: int = 20, seed: int = 20_000, progress=True) -> dict:
    """Measure what the modifiers change, on the same tasks and seeds.

    Returns mean end-effector speed under "quickly" and "slowly" and their ratio (over whole episodes,
    and over the first WINDOW steps of each episode, which is not confounded by episode length), and
    the mean peak height of the held block under "high" and "low" (only tasks that carry or lift a
    block).
    """
    import envs

    names = list(tasks) if tasks is not None else envs.list_tasks()
    lifted = [n for n in names if any(sg.kind != "push" for sg in TASKS[n].subgoals)]
    out = {}
    for key, mods, subset in (
        ("fast", {"speed": "fast"}, names),
        ("slow", {"speed": "slow"}, names),
        ("high", {"height": "high"}, lifted),
        ("low", {"height": "low"}, lifted),
        ("care", {"care": True}, lifted),
        ("normal", None, lifted),
    ):
        r = evaluate_expert(subset, episodes, seed, mods, progress=progress)
        eps = r["episodes"]
        out[key] = {
            "success": float(np.mean([e.success for e in eps])),
            "mean_speed": float(np.mean([e.mean_speed for e in eps])),
            "mean_speed_window": float(np.mean([e.mean_speed_window for e in eps])),
            "mean_length": float(np.mean([e.length for e in eps])),
            "peak_object_height": float(np.mean([e.peak_object_height for e in eps])),
            "peak_ee_height_held": float(np.mean([e.peak_ee_height_held for e in eps])),
        }
    out["speed_ratio_fast_over_slow"] = out["fast"]["mean_speed"] / out["slow"]["mean_speed"]
    out["speed_ratio_window"] = out["fast"]["mean_speed_window"] / out["slow"]["mean_speed_window"]
    out["peak_height_high_minus_low"] = out["high"]["peak_object_height"] - out["low"]["peak_object_height"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m envs.expert", description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=100, help="episodes per task (fresh seeds)")
    p.add_argument("--seed", type=int, default=10_000, help="first episode seed")
    p.add_argument("--tasks", nargs="*", default=None, help="task names (default: all)")
    p.add_argument("--modifier-episodes", type=int, default=20, help="episodes per task for the modifier effects (0: skip)")
    p.add_argument("--modifiers", choices=("none", "random"), default="none",
                   help="modifiers of the success episodes: none (neutral) or random per episode")  # fmt: skip
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)

    t0 = time.time()
    res = evaluate_expert(args.tasks, args.episodes, args.seed, "random" if args.modifiers == "random" else None)
    print(f"scripted expert, {args.episodes} episodes per task, seeds {args.seed}..{args.seed + args.episodes - 1}, "
          f"modifiers: {args.modifiers}")
    print(f"{'task':34s} {'success':>8s} {'mean len':>9s} {'max len':>8s} {'limit':>6s}")
    for name, r in res["tasks"].items():
        print(f"{name:34s} {r['success']:8.1%} {r['mean_length']:9.1f} {r['max_length']:8d} {TASKS[name].max_episode_steps:6d}")
    for suite, s in res["suites"].items():
        print(f"suite {suite:8s} success {s:.1%}")
    summary = {"tasks": res["tasks"], "suites": res["suites"]}
    if args.modifier_episodes > 0:
        eff = modifier_effects(args.tasks, args.modifier_episodes, args.seed + 100_000)
        print(f"modifier effects ({args.modifier_episodes} episodes per task, same seeds per condition):")
        for k in ("slow", "normal", "fast", "low", "high", "care"):
            e = eff[k]
            print(f"  {k:7s} success {e['success']:6.1%}  mean ee speed {e['mean_speed']:.3f} m/s  "
                  f"mean length {e['mean_length']:6.1f}  peak held-block height {e['peak_object_height']:.3f} m")  # fmt: skip
        print(f"  quickly/slowly mean end-effector speed ratio = {eff['speed_ratio_fast_over_slow']:.2f}x "
              f"(whole episodes), {eff['speed_ratio_window']:.2f}x (first {WINDOW} steps of each episode)")
        print(f"  peak held-block height, high - low = {eff['peak_height_high_minus_low']:.3f} m")
        summary["modifier_effects"] = eff
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if all(s >= 0.95 for s in res["suites"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
