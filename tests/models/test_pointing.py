import numpy as np
import pytest
import torch

from arrcoc_steer.data import FrameDataset
from arrcoc_steer.models.minivla import POINTED
from arrcoc_steer.models.pointing import fresh_scene_errors, pointer_errors, summarize
from arrcoc_steer.train import true_pointer
from tests.models.conftest import write_fake_episodes


def test_summary_counts_only_frames_in_view_per_group_and_overall():
    errors = np.array([0.05, 0.2, np.nan, 0.01])
    out = summarize(errors, np.array(["spatial", "spatial", "object", "object"]))
    assert out["spatial"] == {"frames": 2, "mean_error": pytest.approx(0.125), "far": 0.5}
    assert out["object"] == {"frames": 1, "mean_error": pytest.approx(0.01), "far": 0.0}
    assert out["all"]["frames"] == 3 and out["all"]["far"] == pytest.approx(1 / 3)


class PointsAt:
    """A stand-in policy whose agent-view pointer is the true one shifted by ``dx``."""

    grid_cameras = 2

    def __init__(self, dx: float):
        self.dx = dx

    def observe(self, batch, instruction, budget):
        pointer = true_pointer(torch.from_numpy(batch["grounding"]), 2).clone()
        pointer[:, 0, :, 0] += self.dx
        return type("Out", (), {"pointer": pointer})(), None, True


def test_pointer_error_is_zero_at_the_truth_and_half_the_shift_beside_it(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=2, length=4)
    data = FrameDataset([str(tmp_path / "demos")])
    rows = np.arange(len(data))
    exact = pointer_errors(PointsAt(0.0), data, rows, progress=False)
    shifted = pointer_errors(PointsAt(0.1), data, rows, progress=False)
    for name in ("target", "destination"):
        seen = ~np.isnan(exact[name])
        assert seen.any()
        np.testing.assert_allclose(exact[name][seen], 0.0, atol=1e-6)
        np.testing.assert_allclose(shifted[name][seen], 0.05, atol=1e-6)  # mean of |dx| = 0.1 and |dy| = 0


class PointsAtCorner:
    """A stand-in policy that points every class at one fixed image position."""

    grid_cameras = 2

    def __init__(self, xy: float):
        self.xy = xy

    def observe(self, observation, instruction, budget):
        pointer = torch.full((1, 2, len(POINTED), 3), self.xy)
        return type("Out", (), {"pointer": pointer})(), None, False


def test_fresh_scene_errors_measure_the_first_frame_against_the_simulators_truth():
    seeds = [11, 12, 13]
    top_left = fresh_scene_errors(PointsAtCorner(0.0), "PickRedBlockIntoTray", seeds)
    bottom_right = fresh_scene_errors(PointsAtCorner(1.0), "PickRedBlockIntoTray", seeds)
    for name in ("target", "destination"):
        assert len(top_left[name]) == len(seeds) and not np.isnan(top_left[name]).any()
        # |x - 0| + |x - 1| = 1 for a truth inside the image: the errors from opposite corners sum to 1
        np.testing.assert_allclose(top_left[name] + bottom_right[name], 1.0, atol=1e-6)
    assert np.ptp(top_left["target"]) > 0.01  # each seed is a new scene
