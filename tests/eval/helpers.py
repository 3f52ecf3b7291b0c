"""Policies for the eval tests, importable by spawned and Ray workers (module-level, picklable)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arrcoc_steer.eval.policies import ExpertPolicy


class ShapePolicy:
    """Returns an action of the wrong shape."""

    requires_images = False

    def predict_action(self, observation, instruction, **kwargs):
        return np.zeros(6)


class NaNPolicy:
    """Fine for two steps, then NaN."""

    requires_images = False

    def reset(self):
        self.t = 0

    def predict_action(self, observation, instruction, **kwargs):
        self.t += 1
        return np.full(7, np.nan) if self.t > 2 else np.zeros(7)


class RaisingPolicy:
    requires_images = False

    def predict_action(self, observation, instruction, **kwargs):
        raise RuntimeError("out of cheese")


class FlakyExpert(ExpertPolicy):
    """Crashes (outside predict_action) the first time each seed runs in ``marker_dir``; then works.
    ``always`` seeds crash every time. ``die`` seeds kill the worker process on the first try."""

    def __init__(self, marker_dir: str, always=(), die=()):
        super().__init__()
        self.marker_dir, self.always, self.die = marker_dir, tuple(always), tuple(die)

    def __getstate__(self):
        return {**super().__getstate__(), "marker_dir": self.marker_dir, "always": self.always, "die": self.die}

    def reset(self):
        seed = int(np.random.get_state()[1][0])  # the rollout seeds NumPy with the episode seed
        super().reset()
        if seed in self.always:
            raise OSError(f"simulated infrastructure failure on seed {seed}")
        marker = Path(self.marker_dir) / f"seen-{seed}"
        if not marker.exists():
            marker.touch()
            if seed in self.die:
                os._exit(3)
            raise OSError(f"simulated transient failure on seed {seed}")


class InterruptingExpert(ExpertPolicy):
    """Raises KeyboardInterrupt (like Ctrl-C) at the start of its ``after``-th episode in this process."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.episodes = after, 0

    def __getstate__(self):
        return {**super().__getstate__(), "after": self.after, "episodes": 0}

    def reset(self):
        super().reset()
        self.episodes += 1
        if self.episodes == self.after:
            raise KeyboardInterrupt


class SlowExpert(ExpertPolicy):
    """The expert, slowed down so that a test can interrupt a sweep in the middle."""

    def predict_action(self, observation, instruction, **kwargs):
        import time

        time.sleep(0.02)
        return super().predict_action(observation, instruction, **kwargs)
