"""The task's phase, read from proprioception: which role of the instruction deserves detail now.

Reaching, the named object is what the policy must find. Once it is held it rides in the gripper, in
the top of the wrist view at every step, and the destination is where detail pays: with fixed role
weights, 8 of the 14 relevance-64 failures of the shipped policy (object + spatial suites) held the
block above the tray and never lowered it, the wrist camera's lower half (the tray) at the coarsest
level. ``ROLE_WEIGHTS[phase]`` is what the participatory way of knowing couples each role with.

The phase needs no model: the fingers' half-gap (``state[7:9]``, 0 closed .. 0.045 m open) rests at
the block's half-width, 0.019 m, while a 4 cm block is held, and near 0 when closed on air.

>>> phase_of([0, 0, 0, 1, 0, 0, 0, 0.045, 0.045]), phase_of([0, 0, 0, 1, 0, 0, 0, 0.019, 0.019])
('reach', 'carry')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

PHASES = ("reach", "carry")
ROLE_WEIGHTS: dict[str, dict[str, float]] = {
    "reach": {"target": 1.0, "destination": 0.5, "anchor": 0.5},
    "carry": {"target": 0.25, "destination": 1.0, "anchor": 0.5},
}
HOLDING_GAP = (0.008, 0.035)
"""finger half-gap (m) that means "closed on something": above closed-on-air, below fully open."""
FINGERS = slice(7, 9)  # the two finger joints in the tabletop state (ee xyz, quat wxyz, fingers)


def check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise ConfigError(f"phase must be one of {PHASES}, got {phase!r}")
    return phase


def phase_of(state: Any) -> str:
    """``"carry"`` when both fingers rest in HOLDING_GAP (an object between them), else ``"reach"``."""
    state = np.asarray(state, np.float64).reshape(-1)
    if state.size < FINGERS.stop:
        raise ConfigError(f"state has {state.size} values; the phase reads the finger joints at indices 7..8 "
                          f"(ee xyz, quat wxyz, fingers)")  # fmt: skip
    if not np.all(np.isfinite(state[FINGERS])):
        raise ConfigError(f"state's finger joints must be finite, got {state[FINGERS]}")
    lo, hi = HOLDING_GAP
    fingers = state[FINGERS]
    return "carry" if bool(np.all((fingers > lo) & (fingers < hi))) else "reach"
