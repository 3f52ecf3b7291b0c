"""The tabletop scene as MJCF, built programmatically: table, floating two-finger hand, objects, cameras.

World frame (metres): the table top is the plane ``z = 0``; ``+x`` is to the RIGHT and ``+y`` is AWAY
from the agentview camera, which stands in front of the table (``y < 0``) looking down at it. So in
the agentview image "left" is ``-x``, "right" is ``+x``, "front" (near the camera) is ``-y`` and
"back" is ``+y`` -- the words the instructions use.

The hand is a dynamic body (free joint, gravity compensated) welded to a mocap body: the env moves the
mocap target and the weld drags the hand, so the hand has real velocity and the two slide-jointed
fingers (force-limited position actuators) hold objects by friction alone. A purely kinematic mocap
hand cannot lift anything (see DESIGN.md). With the hand's default orientation (identity quaternion)
the fingers point straight down and close along the hand's ``x`` axis (world left-right).

Objects:
  * ``block``: a free 4 cm cube (``BLOCK_HALF`` = 0.02 m), 50 g, coloured.
  * ``tray``: a container (floor + four 3.5 cm walls, inner 14 x 14 cm), a mocap body (static but
    placeable per episode without editing the model).
  * ``plate``: a flat disc (radius 6.5 cm, 1 cm thick), mocap.
  * ``zone``: a flat green square (10 x 10 cm) painted on the table, visual only (no collision), mocap.

Rendering is set up for speed on CPU (DESIGN.md): no shadows, no multisampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---- geometry constants shared by tasks, expert and env (metres) ----
BLOCK_HALF = 0.02
BLOCK_MASS = 0.05
TRAY_INNER_HALF = 0.07
TRAY_WALL = 0.008  # wall half-thickness
TRAY_WALL_HEIGHT = 0.035
TRAY_FLOOR = 0.004  # floor thickness (top of floor above the table)
PLATE_RADIUS = 0.065
PLATE_HEIGHT = 0.01
ZONE_HALF = 0.05
FINGER_MAX = 0.045  # max half-gap between the finger pads (fully open: 9 cm)
FINGER_HALF = (0.006, 0.02, 0.026)  # finger pad box half-sizes in the hand frame (x, y, z)
PALM_HALF = (0.065, 0.03, 0.014)
FINGER_Z = -PALM_HALF[2] - FINGER_HALF[2] - 0.004  # finger body centre below the hand origin
TCP_OFFSET = FINGER_Z - FINGER_HALF[2] + 0.015  # tool centre point: 1.5 cm above the finger tips

COLORS = {
    "red": (0.86, 0.08, 0.08, 1.0),
    "green": (0.10, 0.72, 0.16, 1.0),
    "blue": (0.08, 0.26, 0.92, 1.0),
    "yellow": (0.96, 0.84, 0.06, 1.0),
    "orange": (0.95, 0.48, 0.08, 1.0),
}
TABLE_RGBA = (0.62, 0.60, 0.57, 1.0)
TRAY_RGBA = (0.45, 0.36, 0.28, 1.0)
PLATE_RGBA = (0.93, 0.93, 0.93, 1.0)
ZONE_RGBA = (0.12, 0.80, 0.30, 1.0)
HAND_RGBA = (0.25, 0.25, 0.28, 1.0)
FINGER_RGBA = (0.15, 0.15, 0.17, 1.0)

PHYSICS_DT = 0.004  # seconds per physics step (25 per 10 Hz control step)
CAMERAS = ("agentview", "wrist")
# footprint radius of each kind, used by the layout samplers to keep objects apart
FOOTPRINT = {"block": 0.045, "tray": (TRAY_INNER_HALF + 2 * TRAY_WALL) * np.sqrt(2), "plate": PLATE_RADIUS, "zone": 0.065}
GRIPPER_BODIES = ("hand", "finger_left", "finger_right")


@dataclass(frozen=True)
class ObjectSpec:
    """One object in a scene: ``name`` (body name, also the key in ``info``), ``kind``, ``color``."""

    name: str
    kind: str  # "block" | "tray" | "plate" | "zone"
    color: str | None = None

    @property
    def movable(self) -> bool:
        return self.kind == "block"


AGENTVIEW_POS = (0.0, -0.58, 0.52)
AGENTVIEW_TARGET = (0.0, 0.04, 0.11)
WRIST_POS = (0.0, -0.05, -0.005)  # hand frame: beside the palm, behind the fingers' closing plane
WRIST_TARGET = (0.0, 0.0, -0.13)  # looks down at a point below the finger tips
AGENTVIEW_FOVY = 45


def _look_at(pos, target, up=(0.0, 0.0, 1.0)) -> tuple[float, ...]:
    """MuJoCo ``xyaxes`` of a camera at ``pos`` looking at ``target`` with ``up`` towards the image top."""
    fwd = np.subtract(target, pos, dtype=float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return (*right, *up)


def _f(*xs: float) -> str:
    return " ".join(f"{x:.6g}" for x in xs)


def _object_xml(obj: ObjectSpec, index: int) -> str:
    n = obj.name
    # every object starts parked off the table; reset() places it
    park = _f(0.6 + 0.1 * index, 0.6, 0.1)
    if obj.kind == "block":
        rgba = _f(*COLORS[obj.color or "red"])
        return (
            f'<body name="{n}" pos="{park}"><freejoint name="{n}/joint"/>'
            f'<geom name="{n}/geom" type="box" size="{_f(*(BLOCK_HALF,) * 3)}" mass="{BLOCK_MASS}" '
            f'rgba="{rgba}" friction="1.0 0.01 0.001" condim="4" priority="1"/></body>'
        )
    if obj.kind == "tray":
        h, w, hw, fl = TRAY_INNER_HALF, TRAY_WALL, TRAY_WALL_HEIGHT / 2, TRAY_FLOOR / 2
        o = h + w  # wall centre offset
        rgba = _f(*TRAY_RGBA)
        walls = [
            (_f(o, 0, hw), _f(w, h + 2 * w, hw)),
            (_f(-o, 0, hw), _f(w, h + 2 * w, hw)),
            (_f(0, o, hw), _f(h, w, hw)),
            (_f(0, -o, hw), _f(h, w, hw)),
        ]
        geoms = f'<geom name="{n}/floor" type="box" pos="{_f(0, 0, fl)}" size="{_f(h, h, fl)}" rgba="{rgba}"/>'
        for i, (pos, size) in enumerate(walls):
            geoms += f'<geom name="{n}/wall{i}" type="box" pos="{pos}" size="{size}" rgba="{rgba}"/>'
        return f'<body name="{n}" mocap="true" pos="{park}">{geoms}</body>'
    if obj.kind == "plate":
        return (
            f'<body name="{n}" mocap="true" pos="{park}"><geom name="{n}/geom" type="cylinder" '
            f'pos="{_f(0, 0, PLATE_HEIGHT / 2)}" size="{_f(PLATE_RADIUS, PLATE_HEIGHT / 2)}" '
            f'rgba="{_f(*PLATE_RGBA)}"/></body>'
        )
    if obj.kind == "zone":
        return (
            f'<body name="{n}" mocap="true" pos="{park}"><geom name="{n}/geom" type="box" '
            f'pos="0 0 0.0006" size="{_f(ZONE_HALF, ZONE_HALF, 0.0005)}" rgba="{_f(*ZONE_RGBA)}" '
            f'contype="0" conaffinity="0"/></body>'
        )
    raise ValueError(f"unknown object kind {obj.kind!r}")


def _hand_xml() -> str:
    fx, fy, fz = FINGER_HALF
    px, py, pz = PALM_HALF
    finger_z = FINGER_Z

    def finger(side: str, sign: int) -> str:
        # joint q = distance from the hand's centre plane to the pad's inner face
        return (
            f'<body name="finger_{side}" pos="{_f(0, 0, finger_z)}" gravcomp="1">'
            f'<joint name="finger_{side}" type="slide" axis="{_f(sign, 0, 0)}" range="{_f(0, FINGER_MAX)}" '
            f'damping="4" armature="0.01"/>'
            f'<geom name="finger_{side}/pad" type="box" pos="{_f(sign * fx, 0, 0)}" size="{_f(fx, fy, fz)}" '
            f'mass="0.05" rgba="{_f(*FINGER_RGBA)}" friction="1.2 0.02 0.001" condim="4" priority="2"/>'
            f"</body>"
        )

    return (
        '<body name="hand_target" mocap="true" pos="0 0 0.3"/>'
        '<body name="hand" pos="0 0 0.3" gravcomp="1"><freejoint name="hand/joint"/>'
        f'<geom name="hand/palm" type="box" size="{_f(px, py, pz)}" mass="0.8" rgba="{_f(*HAND_RGBA)}"/>'
        f'<geom name="hand/wrist" type="cylinder" pos="{_f(0, 0, pz + 0.02)}" size="0.018 0.02" mass="0.1" '
        f'rgba="{_f(*HAND_RGBA)}"/>'
        f'<site name="tcp" pos="{_f(0, 0, TCP_OFFSET)}" size="0.004" rgba="1 0 0 0"/>'
        # wrist camera beside the palm, looking down between the fingers (image up = hand +y)
        f'<camera name="wrist" pos="{_f(*WRIST_POS)}" xyaxes="{_f(*_look_at(WRIST_POS, WRIST_TARGET, up=(0, 1, 0)))}" '
        'fovy="75"/>'
        + finger("left", -1)
        + finger("right", 1)
        + "</body>"
    )


def build_mjcf(objects: tuple[ObjectSpec, ...], image_size: int = 128) -> str:
    """Return the MJCF text of a scene holding ``objects`` (see the module docstring)."""
    side = max(int(image_size), 64)
    body = "".join(_object_xml(o, i) for i, o in enumerate(objects))
    return f"""
<mujoco model="arrcoc_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_DT}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{side}" offheight="{side}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
    <map znear="0.01"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.30 0.31 0.33" rgb2="0.26 0.27 0.29"
             width="64" height="64"/>
    <material name="floor" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light name="top" pos="0 -0.2 1.5" dir="0 0.1 -1" directional="true" castshadow="false"
           diffuse="0.55 0.55 0.55" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" material="floor"/>
    <geom name="table" type="box" pos="0 0 -0.02" size="0.45 0.36 0.02" rgba="{_f(*TABLE_RGBA)}"
          friction="0.6 0.01 0.001"/>
    <geom name="table_leg" type="box" pos="0 0 -0.39" size="0.4 0.3 0.35" rgba="0.35 0.33 0.30 1"/>
    <camera name="agentview" pos="{_f(*AGENTVIEW_POS)}" xyaxes="{_f(*_look_at(AGENTVIEW_POS, AGENTVIEW_TARGET))}" fovy="{AGENTVIEW_FOVY}"/>
    {_hand_xml()}
    {body}
  </worldbody>
  <equality>
    <weld name="hand_weld" body1="hand_target" body2="hand" relpose="0 0 0 1 0 0 0"
          solref="0.02 1" solimp="0.99 0.999 0.001"/>
  </equality>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="150" ctrlrange="0 {FINGER_MAX}" forcerange="-6 6"/>
    <position name="finger_right" joint="finger_right" kp="150" ctrlrange="0 {FINGER_MAX}" forcerange="-6 6"/>
  </actuator>
</mujoco>
"""
