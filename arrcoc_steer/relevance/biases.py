"""Relevance steering: additive biases that push the visual budget toward action-relevant regions.

A ``Steer`` is the user's knob: ``Steer("target")`` (the instruction's target object: the simulator's
target mask when given, else the participatory grounding of the instruction), ``Steer("gripper")``
(a Gaussian around the gripper's pixel, e.g. the end effector projected with the camera matrix;
without one, the wrist camera's fixed bottom-centre regions where the fingers are), ``Steer("mask",
mask=...)`` or ``Steer("box", box=(x0, y0, x1, y1))`` (pixels). Each bias is a per-region coverage in
[0, 1], divided by its max within each camera (the best-covered region of a camera gets the full
``strength``), times ``strength``, added to the relevance before allocation. Relevance lives in
[0, 1], so ``strength=0.5`` is a strong nudge and ``strength=2`` all but dictates the allocation.
A bias that would cover nothing is an error, not silence.

>>> Steer("box", box=(0, 0, 32, 32), camera="agentview").toward
'box'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, UnknownNameError
from ..regions import CAMERAS, RegionGrid

STEER_TARGETS = ("target", "gripper", "mask", "box")
WRIST_GRIPPER_PRIOR = np.array(  # (4, 4) over the wrist camera's regions: the fingers at bottom centre
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0.5, 0.5, 0], [0.25, 1, 1, 0.25]], np.float64
)


@dataclass(frozen=True, eq=False)
class Steer:
    """An additive relevance bias (module docstring)."""

    toward: str
    """one of STEER_TARGETS: "target", "gripper", "mask" or "box"."""
    strength: float = 0.5
    """added to the relevance of the best-covered region of each camera (negative pushes away)."""
    camera: str | None = None
    """restrict the bias to one camera; None = every camera."""
    mask: np.ndarray | None = None
    """for toward="mask": (S, S) for ``camera`` (or every camera), or (n_cameras, S, S); bool or [0, 1]."""
    box: tuple[float, float, float, float] | None = None
    """for toward="box": (x0, y0, x1, y1) in pixels, x0 < x1, y0 < y1."""

    def __post_init__(self):
        if self.toward not in STEER_TARGETS:
            raise UnknownNameError("steering target", self.toward, STEER_TARGETS)
        if not np.isfinite(self.strength):
            raise ConfigError(f"Steer.strength must be finite, got {self.strength!r}")
        if self.camera is not None and self.camera not in CAMERAS:
            raise UnknownNameError("camera", self.camera, CAMERAS)
        if (self.mask is not None) != (self.toward == "mask"):
            raise ConfigError(f"Steer.mask is required for toward='mask' and only then (toward={self.toward!r})")
        if (self.box is not None) != (self.toward == "box"):
            raise ConfigError(f"Steer.box is required for toward='box' and only then (toward={self.toward!r})")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if not np.all(np.isfinite(m)) or not m.any():
                raise ConfigError("Steer.mask is empty (all zero) or holds NaN/inf: it would steer nothing")
        if self.box is not None:
            if len(self.box) != 4:
                raise ConfigError(f"Steer.box must be (x0, y0, x1, y1), got {self.box!r}")
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise ConfigError(f"Steer.box must have x0 < x1 and y0 < y1, got {self.box!r}")


def project_points(camera_matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points ``(..., 3)`` -> pixels ``(..., 2)`` (u right, v down) with a 3 x 4 camera matrix."""
    m = np.asarray(camera_matrix, np.float64)
    if m.shape != (3, 4):
        raise ConfigError(f"camera_matrix must be 3 x 4 (world -> pixel), got {m.shape}")
    p = np.asarray(points, np.float64)
    h = p @ m[:, :3].T + m[:, 3]
    return h[..., :2] / h[..., 2:3]


def gripper_pixels(
    camera_matrix: Callable[[str], np.ndarray] | Mapping[str, np.ndarray], ee_pos: np.ndarray, cameras=CAMERAS
) -> dict[str, tuple[float, float]]:
    """``{camera: (u, v)}`` of the end effector, e.g. ``gripper_pixels(env.unwrapped.camera_matrix, ee)``."""
    get = camera_matrix.__getitem__ if isinstance(camera_matrix, Mapping) else camera_matrix
    return {c: tuple(float(x) for x in project_points(get(c), ee_pos)) for c in cameras}


def _coverage(masks: np.ndarray, grid: RegionGrid) -> np.ndarray:
    """Region means of ``(n, S, S)`` maps -> ``(n, R)``."""
    n, s, g = masks.shape[0], grid.region_px, grid.grid
    return masks.reshape(n, g, s, g, s).mean((2, 4)).reshape(n, g * g)


def check_masks(masks: np.ndarray, grid: RegionGrid, n_cameras: int, what: str) -> np.ndarray:
    """``(S, S)`` or ``(n_cameras, S, S)`` -> float ``(n_cameras, S, S)``, or ConfigError."""
    m = np.asarray(masks)
    s = grid.image_size
    if m.shape == (s, s):
        m = np.broadcast_to(m, (n_cameras, s, s))
    if m.shape != (n_cameras, s, s):
        raise ConfigError(f"{what} must be ({s}, {s}) or ({n_cameras}, {s}, {s}), got shape {m.shape}")
    return m.astype(np.float64)


def _gripper_coverage(grid: RegionGrid, cameras: Sequence[str], gripper_px) -> np.ndarray:
    boxes = grid.region_boxes()
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)  # (R, 2)
    cov = np.zeros((len(cameras), grid.regions_per_camera))
    for i, cam in enumerate(cameras):
        uv = (gripper_px or {}).get(cam)
        if uv is not None:
            u, v = uv
            if 0 <= u < grid.image_size and 0 <= v < grid.image_size:
                d2 = ((centres - np.array([u, v])) ** 2).sum(1)
                cov[i] = np.exp(-d2 / (2 * (grid.region_px / 2) ** 2))
        elif cam == "wrist" and grid.grid == 4:
            cov[i] = WRIST_GRIPPER_PRIOR.ravel()
    return cov


def steering_bias(
    steers: Sequence[Steer],
    grid: RegionGrid,
    cameras: Sequence[str] = CAMERAS,
    *,
    target_cells: np.ndarray | None = None,
    target_masks: np.ndarray | None = None,
    gripper_px: Mapping[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """Sum of the biases, ``(n_cameras, R)``.

    target_cells: ``(n_cameras, G, G)`` participatory map (the instruction's grounding), used by
    Steer("target") when ``target_masks`` (``(n_cameras, S, S)``, e.g. simulator segmentation) is absent.
    """
    n = len(cameras)
    total = np.zeros((n, grid.regions_per_camera))
    for steer in steers:
        if not isinstance(steer, Steer):
            raise ConfigError(f"steer must hold Steer objects, got {type(steer).__name__}")
        if steer.toward == "mask":
            cov = _coverage(check_masks(steer.mask, grid, n, "Steer.mask"), grid)
        elif steer.toward == "box":
            x0, y0, x1, y1 = (int(round(v)) for v in steer.box)
            m = np.zeros((grid.image_size, grid.image_size))
            m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1
            if not m.any():
                raise ConfigError(f"Steer.box {steer.box} lies outside the {grid.image_size}-px image")
            cov = _coverage(np.broadcast_to(m, (n, *m.shape)), grid)
        elif steer.toward == "gripper":
            cov = _gripper_coverage(grid, cameras, gripper_px)
        else:  # target
            if target_masks is not None:
                cov = _coverage(check_masks(target_masks, grid, n, "target_masks"), grid)
            elif target_cells is not None:
                g, c = grid.grid, grid.cells
                cov = np.asarray(target_cells, np.float64).reshape(n, g, c, g, c).mean((2, 4)).reshape(n, -1)
            else:
                cov = np.zeros_like(total)
        if steer.camera is not None:
            cov = np.where(np.array([c == steer.camera for c in cameras])[:, None], cov, 0.0)
        top = cov.max(1, keepdims=True)
        if not top.any():
            raise ConfigError(_never_fires(steer))
        total += steer.strength * cov / np.where(top > 0, top, 1.0)
    return total


def _never_fires(steer: Steer) -> str:
    where = f" on camera {steer.camera!r}" if steer.camera else ""
    if steer.toward == "target":
        return (
            f"Steer('target'){where} found no target: the instruction names nothing the palette knows "
            "(see Grounder.query(...).describe()) and no target_masks were given"
        )
    if steer.toward == "gripper":
        return f"Steer('gripper'){where} needs gripper_px for that camera (e.g. from gripper_pixels(...))"
    return f"Steer({steer.toward!r}){where} covers no pixel of the selected camera(s)"
