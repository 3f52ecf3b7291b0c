"""Task-relative grounding labels from the simulator's segmentation, for training and analysis.

Every pixel of a camera image belongs to one class relative to what the task asks *now* (the first
subgoal not yet done): the gripper, the target object, its destination (container, plate or zone),
a distractor object, or anything else (table, background, other containers). Labels are counted
per feature cell (``cell`` x ``cell`` pixels), which is what a region-token encoder averages over.

>>> import envs
>>> env = envs.make("PickRedBlockIntoTray")
>>> _ = env.reset(seed=0)
>>> counts = grounding_cells(env.unwrapped, "agentview")
>>> counts.shape, int(counts.sum(-1).max()), bool(counts[:, CLASSES.index("target")].any())
((256, 5), 64, True)
>>> env.close()
"""

from __future__ import annotations

import numpy as np

from .scene import GRIPPER_BODIES

CLASSES = ("other", "gripper", "target", "destination", "distractor")


def current_subgoal(env):
    """The first subgoal not yet achieved (the last one once all are done)."""
    done = env.subgoals_done()
    return next((sg for sg, ok in zip(env.subgoals, done) if not ok), env.subgoals[-1])


def class_map(env, camera: str) -> np.ndarray:
    """(H, W) uint8 class index (see CLASSES) of every pixel seen by ``camera``."""
    bodies = env._renderer_or_raise().segment_bodies(env.data, camera)
    model = env.model
    sg = current_subgoal(env)
    out = np.zeros(bodies.shape, np.uint8)
    for name in env.blocks:
        out[bodies == model.body(name).id] = CLASSES.index("target" if name == sg.obj else "distractor")
    if sg.dest:
        out[bodies == model.body(sg.dest).id] = CLASSES.index("destination")
    out[np.isin(bodies, [model.body(b).id for b in GRIPPER_BODIES])] = CLASSES.index("gripper")
    return out


def grounding_cells(env, camera: str, cell: int = 8) -> np.ndarray:
    """(cells, len(CLASSES)) uint8 pixel counts per ``cell`` x ``cell`` block, row-major."""
    labels = class_map(env, camera)
    h, w = labels.shape
    blocks = labels.reshape(h // cell, cell, w // cell, cell).transpose(0, 2, 1, 3).reshape(-1, cell * cell)
    counts = np.stack([(blocks == k).sum(1) for k in range(len(CLASSES))], 1)
    return counts.astype(np.uint8)


def scene_grounding(env, cameras: tuple[str, ...] = ("agentview", "wrist")) -> np.ndarray:
    """(len(cameras) * cells, len(CLASSES)) counts of every camera, stacked: one frame's ``grounding``
    array as the demo datasets record it."""
    return np.concatenate([grounding_cells(env, c) for c in cameras])
