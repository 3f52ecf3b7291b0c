"""Offscreen camera rendering: one reusable ``mujoco.Renderer`` per env, RGB and segmentation.

MuJoCo picks its OpenGL backend from the ``MUJOCO_GL`` environment variable when ``mujoco`` is first
imported. On a machine without a display the default (glfw) fails: set ``MUJOCO_GL=egl`` (or
``osmesa``) before importing mujoco. A renderer that cannot be created raises :class:`RenderingError`
saying so.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from arrcoc_steer.errors import ArrcocError


class RenderingError(ArrcocError, RuntimeError):
    """MuJoCo could not create an offscreen OpenGL context."""


def _gl_hint() -> str:
    backend = os.environ.get("MUJOCO_GL")
    now = f"MUJOCO_GL={backend!r}" if backend else "MUJOCO_GL is unset (so MuJoCo tries glfw, which needs a display)"
    return (
        f"{now}. Set MUJOCO_GL=egl (or MUJOCO_GL=osmesa, which needs libosmesa6) in the environment "
        "before Python imports mujoco, e.g. `export MUJOCO_GL=egl`."
    )


class CameraRenderer:
    """Renders named cameras of one model at ``size x size`` pixels into fresh uint8 arrays."""

    def __init__(self, model: mujoco.MjModel, size: int):
        try:
            self._r = mujoco.Renderer(model, size, size)
        except Exception as e:  # glfw / EGL / OSMesa failures surface as various exception types
            raise RenderingError(f"Could not create a MuJoCo offscreen renderer ({type(e).__name__}: {e}). {_gl_hint()}") from e
        self._model = model
        self._seg_geom_body = np.append(model.geom_bodyid, -1).astype(np.int64)  # index -1 -> -1

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """(size, size, 3) uint8 RGB, row 0 at the top."""
        self._r.update_scene(data, camera=camera)
        return self._r.render()

    def segment_bodies(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """(size, size) int body id of the geom seen in each pixel, -1 for background."""
        self._r.enable_segmentation_rendering()
        try:
            self._r.update_scene(data, camera=camera)
            seg = self._r.render()  # (H, W, 2): object id, object type
        finally:
            self._r.disable_segmentation_rendering()
        ids, types = seg[..., 0], seg[..., 1]
        geom = np.where((types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0), ids, -1)
        return self._seg_geom_body[geom]

    def close(self) -> None:
        if self._r is not None:
            self._r.close()
            self._r = None
