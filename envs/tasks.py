"""The task suites: what is on the table, what the instruction says, and when the task is done.

A :class:`TaskSpec` holds a task's suite and name, its instruction paraphrases, its scene (objects),
its layout sampler (random object positions whose spatial relations the task relies on), its subgoals
(the success predicate and, in order, the scripted expert's plan) and its time limit.

Suites mirror LIBERO's:

* ``spatial`` -- two or three IDENTICAL orange blocks and a tray; the instruction picks the block by a
  spatial relation (left / right / front / closest to the tray), seen from the agentview camera.
* ``object`` -- four blocks of distinct colours (red, green, blue, yellow) and a tray; the instruction
  picks the block by colour.
* ``goal`` -- one scene (red block, tray, plate, green zone), four goals: push the block onto the zone
  (no lift), lift it, put it in the tray, put it on the plate.
* ``long`` -- two subgoals in sequence in a scene with a red and a blue block, a tray, a plate and a
  zone.

A subgoal names its object either directly (``"red_block"``) or by a selector resolved on the
episode's layout (``"@left"``, ``"@right"``, ``"@front"``, ``"@closest:tray"``).

Success predicates (all subgoals must hold at the same time; the object must be at rest, < 5 cm/s):

* ``in`` tray: the block's centre is inside the tray's inner square (5.5 cm from its centre at most,
  so the block lies fully inside), resting low in the tray, and no finger touches it (released).
* ``on`` plate: the block's centre is within 5.5 cm of the plate's centre, its bottom rests on the
  plate, and no finger touches it.
* ``lift``: the block is held by both fingers with its bottom >= 5 cm above the table and has
  stopped rising (vertical speed < 2 cm/s).
* ``push`` to zone: the block's centre is inside the green square, it rests on the table, and it was
  never lifted more than 2 cm during the episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .scene import (
    BLOCK_HALF,
    FOOTPRINT,
    PLATE_HEIGHT,
    PLATE_RADIUS,
    TRAY_FLOOR,
    TRAY_INNER_HALF,
    ZONE_HALF,
    ObjectSpec,
)

SUITE_NAMES = ("spatial", "object", "goal", "long")
LIFT_MIN_HEIGHT = 0.05  # block bottom above the table for "lift" success
PUSH_MAX_LIFT = 0.02  # a pushed block whose bottom ever rose higher than this fails the push task
REST_SPEED = 0.05  # m/s: an object slower than this counts as at rest

Layout = dict[str, np.ndarray]  # object name -> (x, y, yaw)


@dataclass(frozen=True)
class Subgoal:
    """One step of a task: ``kind`` in {"in", "on", "lift", "push"}, the object, the destination."""

    kind: str
    obj: str  # object name or selector ("@left", "@right", "@front", "@closest:tray")
    dest: str | None = None  # "tray" | "plate" | "zone" | None (lift)

    def describe(self) -> str:
        return f"{self.kind}({self.obj}{', ' + self.dest if self.dest else ''})"


@dataclass(frozen=True)
class TaskSpec:
    """A task: suite, name, instruction paraphrases, scene, layout sampler, subgoals, time limit.

    Attributes:
        name: CamelCase task name; the gymnasium id is ``arrcoc/<name>-v0``.
        suite: one of SUITE_NAMES.
        paraphrases: >= 3 neutral instructions (no speed / height / care words).
        objects: the scene's objects (blocks are free bodies, containers are placed per episode).
        layout: ``layout(rng) -> Layout``, object positions (x, y, yaw) satisfying the task's relations.
        subgoals: what must hold for success; also the expert's plan, in order.
        max_episode_steps: truncation limit at 10 Hz (about 2.5x the normal-speed expert's length).
    """

    name: str
    suite: str
    paraphrases: tuple[str, ...]
    objects: tuple[ObjectSpec, ...]
    layout: Callable[[np.random.Generator], Layout] = field(repr=False)
    subgoals: tuple[Subgoal, ...]
    max_episode_steps: int

    @property
    def env_id(self) -> str:
        return f"arrcoc/{self.name}-v0"

    def resolve(self, layout: Layout) -> tuple[Subgoal, ...]:
        """Subgoals with selectors replaced by the object names they pick on ``layout``."""
        return tuple(Subgoal(s.kind, resolve_selector(s.obj, layout), s.dest) for s in self.subgoals)


# ----------------------------------------------------------------------------------------------
# selectors
def resolve_selector(obj: str, layout: Layout) -> str:
    if not obj.startswith("@"):
        return obj
    blocks = sorted(n for n in layout if n.startswith("block"))
    xy = np.array([layout[n][:2] for n in blocks])
    if obj == "@left":
        return blocks[int(np.argmin(xy[:, 0]))]
    if obj == "@right":
        return blocks[int(np.argmax(xy[:, 0]))]
    if obj == "@front":
        return blocks[int(np.argmin(xy[:, 1]))]
    if obj == "@back":
        return blocks[int(np.argmax(xy[:, 1]))]
    if obj.startswith("@closest:"):
        ref = layout[obj.split(":", 1)[1]][:2]
        return blocks[int(np.argmin(np.linalg.norm(xy - ref, axis=1)))]
    raise ValueError(f"unknown selector {obj!r}")


# ----------------------------------------------------------------------------------------------
# layout sampling
# centre bounds per kind: (xmin, xmax, ymin, ymax); all of it is in reach and in view of agentview
BOUNDS = {
    "block": (-0.20, 0.20, -0.14, 0.16),
    "tray": (-0.15, 0.15, -0.09, 0.11),
    "plate": (-0.18, 0.18, -0.12, 0.14),
    "zone": (-0.18, 0.18, -0.12, 0.14),
}
GAP = 0.015


def _sample_once(objects, rng) -> Layout:
    out: Layout = {}
    # big things first: they are the hardest to fit
    order = sorted(objects, key=lambda o: -FOOTPRINT[o.kind])
    for o in order:
        x0, x1, y0, y1 = BOUNDS[o.kind]
        for _ in range(200):
            x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            ok = all(
                np.hypot(x - p[0], y - p[1]) >= FOOTPRINT[o.kind] + FOOTPRINT[k] + GAP
                for k, p in ((_kind(objects, n), p) for n, p in out.items())
            )
            if ok:
                break
        else:
            return {}
        yaw = rng.uniform(-np.pi / 4, np.pi / 4) if o.kind == "block" else 0.0
        out[o.name] = np.array([x, y, yaw])
    return out


def _kind(objects, name) -> str:
    return next(o.kind for o in objects if o.name == name)


def make_layout_sampler(objects, constraint=None) -> Callable[[np.random.Generator], Layout]:
    """Rejection sampler: non-overlapping positions inside BOUNDS that satisfy ``constraint``."""

    def sample(rng: np.random.Generator) -> Layout:
        for _ in range(2000):
            lay = _sample_once(objects, rng)
            if lay and (constraint is None or constraint(lay)):
                return {o.name: lay[o.name] for o in objects}  # scene order
        raise RuntimeError("layout sampler failed to satisfy its constraint in 2000 tries")

    return sample


def _separated(axis: int, min_gap: float, max_other: float):
    """Two blocks clearly apart along ``axis`` and roughly aligned along the other axis."""

    def ok(lay: Layout) -> bool:
        a, b = lay["block_a"], lay["block_b"]
        return abs(a[axis] - b[axis]) >= min_gap and abs(a[1 - axis] - b[1 - axis]) <= max_other

    return ok


def _one_clearly_closest(lay: Layout) -> bool:
    ref = lay["tray"][:2]
    d = sorted(np.linalg.norm(lay[n][:2] - ref) for n in ("block_a", "block_b", "block_c"))
    return d[1] - d[0] >= 0.06


def _clear_push_path(block: str):
    """The block is 12-25 cm from the zone and the push path (hand included) misses every other object."""

    def ok(lay: Layout) -> bool:
        b, z = lay[block][:2], lay["zone"][:2]
        dist = np.linalg.norm(z - b)
        if not 0.12 <= dist <= 0.25:
            return False
        d = (z - b) / dist
        start, end = b - 0.07 * d, z
        for name, p in lay.items():
            if name in (block, "zone"):
                continue
            kind = "block" if "block" in name else name
            t = np.clip(np.dot(p[:2] - start, end - start) / np.dot(end - start, end - start), 0, 1)
            if np.linalg.norm(p[:2] - (start + t * (end - start))) < FOOTPRINT[kind] + 0.05:
                return False
        return True

    return ok


# ----------------------------------------------------------------------------------------------
# success predicates
@dataclass
class WorldState:
    """What the predicates read, filled by the env each step (positions in metres, world frame)."""

    pos: dict[str, np.ndarray]  # object name -> (3,) centre (containers: base centre on the table)
    vel: dict[str, np.ndarray]  # block name -> (3,) linear velocity
    touching: dict[str, set]  # block name -> {"finger_left", "finger_right"} in contact
    max_bottom: dict[str, float]  # block name -> highest bottom height so far this episode


def subgoal_done(sg: Subgoal, w: WorldState) -> bool:
    p, v = w.pos[sg.obj], w.vel[sg.obj]
    bottom = p[2] - BLOCK_HALF
    resting = np.linalg.norm(v) < REST_SPEED
    released = not w.touching[sg.obj]
    if sg.kind == "in":
        c = w.pos[sg.dest]
        inside = np.all(np.abs(p[:2] - c[:2]) <= TRAY_INNER_HALF - 0.015)
        return bool(inside and bottom < c[2] + TRAY_FLOOR + 0.02 and resting and released)
    if sg.kind == "on":
        c = w.pos[sg.dest]
        on = np.linalg.norm(p[:2] - c[:2]) <= PLATE_RADIUS - 0.01
        top = c[2] + PLATE_HEIGHT
        return bool(on and top - 0.005 <= bottom <= top + 0.015 and resting and released)
    if sg.kind == "lift":
        held = len(w.touching[sg.obj]) == 2
        return bool(held and bottom >= LIFT_MIN_HEIGHT and abs(v[2]) < 0.02)
    if sg.kind == "push":
        c = w.pos[sg.dest]
        inside = np.all(np.abs(p[:2] - c[:2]) <= ZONE_HALF)
        return bool(inside and bottom < 0.005 and resting and w.max_bottom[sg.obj] <= PUSH_MAX_LIFT)
    raise ValueError(f"unknown subgoal kind {sg.kind!r}")


# ----------------------------------------------------------------------------------------------
# the suites
def _blocks(*names_colors) -> tuple[ObjectSpec, ...]:
    return tuple(ObjectSpec(n, "block", c) for n, c in names_colors)


TRAY, PLATE, ZONE = ObjectSpec("tray", "tray"), ObjectSpec("plate", "plate"), ObjectSpec("zone", "zone")
SPATIAL2 = _blocks(("block_a", "orange"), ("block_b", "orange")) + (TRAY,)
SPATIAL3 = _blocks(("block_a", "orange"), ("block_b", "orange"), ("block_c", "orange")) + (TRAY,)
OBJECT = _blocks(("red_block", "red"), ("green_block", "green"), ("blue_block", "blue"),
                 ("yellow_block", "yellow")) + (TRAY,)  # fmt: skip
GOAL = _blocks(("red_block", "red")) + (TRAY, PLATE, ZONE)
LONG = _blocks(("red_block", "red"), ("blue_block", "blue")) + (TRAY, PLATE, ZONE)

_lr = make_layout_sampler(SPATIAL2, _separated(axis=0, min_gap=0.12, max_other=0.06))
_fb = make_layout_sampler(SPATIAL2, _separated(axis=1, min_gap=0.12, max_other=0.06))
_closest = make_layout_sampler(SPATIAL3, _one_clearly_closest)
_object = make_layout_sampler(OBJECT)
_goal = make_layout_sampler(GOAL, _clear_push_path("red_block"))
_long = make_layout_sampler(LONG, _clear_push_path("red_block"))


def _spatial(name, sel, layout, objects, phrases) -> TaskSpec:
    return TaskSpec(name, "spatial", phrases, objects, layout, (Subgoal("in", sel, "tray"),), 200)


def _color_task(color: str) -> TaskSpec:
    c = color.capitalize()
    phrases = (
        f"put the {color} block in the tray",
        f"pick up the {color} block and place it in the tray",
        f"move the {color} block into the tray",
        f"place the {color} cube in the tray",
    )
    return TaskSpec(f"Pick{c}BlockIntoTray", "object", phrases, OBJECT, _object,
                    (Subgoal("in", f"{color}_block", "tray"),), 200)  # fmt: skip


_TASK_LIST = [
    _spatial("PickLeftBlockIntoTray", "@left", _lr, SPATIAL2, (
        "pick up the block on the left and put it in the tray",
        "put the left block in the tray",
        "place the leftmost block into the tray",
        "move the block on the left into the tray",
    )),
    _spatial("PickRightBlockIntoTray", "@right", _lr, SPATIAL2, (
        "pick up the block on the right and put it in the tray",
        "put the right block in the tray",
        "place the rightmost block into the tray",
        "move the block on the right into the tray",
    )),
    _spatial("PickFrontBlockIntoTray", "@front", _fb, SPATIAL2, (
        "pick up the block in front and put it in the tray",
        "put the front block in the tray",
        "place the block nearest to the camera into the tray",
        "move the block at the front into the tray",
    )),
    _spatial("PickBlockClosestToTrayIntoTray", "@closest:tray", _closest, SPATIAL3, (
        "put the block closest to the tray in the tray",
        "pick up the block nearest the tray and put it in the tray",
        "place the block that is closest to the tray into the tray",
    )),
    *(_color_task(c) for c in ("red", "green", "blue", "yellow")),
    TaskSpec("PushRedBlockToZone", "goal", (
        "push the red block onto the green zone",
        "slide the red block onto the green square",
        "push the red block to the green target area",
    ), GOAL, _goal, (Subgoal("push", "red_block", "zone"),), 150),
    TaskSpec("LiftRedBlock", "goal", (
        "lift the red block",
        "pick up the red block and hold it up",
        "raise the red block off the table",
    ), GOAL, _goal, (Subgoal("lift", "red_block"),), 120),
    TaskSpec("PutRedBlockInTray", "goal", (
        "put the red block in the tray",
        "place the red block into the tray",
        "move the red block into the tray",
    ), GOAL, _goal, (Subgoal("in", "red_block", "tray"),), 200),
    TaskSpec("PutRedBlockOnPlate", "goal", (
        "put the red block on the plate",
        "place the red block onto the plate",
        "move the red block onto the plate",
    ), GOAL, _goal, (Subgoal("on", "red_block", "plate"),), 200),
    TaskSpec("PutRedInTrayThenBlueOnPlate", "long", (
        "put the red block in the tray and then the blue block on the plate",
        "place the red block into the tray, then put the blue block on the plate",
        "first put the red block in the tray, then place the blue block on the plate",
    ), LONG, _long, (Subgoal("in", "red_block", "tray"), Subgoal("on", "blue_block", "plate")), 400),
    TaskSpec("PutBothBlocksInTray", "long", (
        "put both blocks in the tray",
        "place the red block and the blue block in the tray",
        "put the red and blue blocks into the tray",
    ), LONG, _long, (Subgoal("in", "red_block", "tray"), Subgoal("in", "blue_block", "tray")), 400),
    TaskSpec("PushRedToZoneThenBlueInTray", "long", (
        "push the red block onto the green zone and then put the blue block in the tray",
        "slide the red block onto the green square, then place the blue block in the tray",
        "first push the red block to the green zone, then put the blue block into the tray",
    ), LONG, _long, (Subgoal("push", "red_block", "zone"), Subgoal("in", "blue_block", "tray")), 400),
]  # fmt: skip

TASKS: dict[str, TaskSpec] = {t.name: t for t in _TASK_LIST}
SUITES: dict[str, list[str]] = {s: [t.name for t in _TASK_LIST if t.suite == s] for s in SUITE_NAMES}
