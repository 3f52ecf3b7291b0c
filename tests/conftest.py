import os

# Offscreen rendering on a machine without a display (see DESIGN.md: glfw fails headless).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402 (after the environment above)


@pytest.fixture(scope="module")
def policy():
    """An untrained MiniVLA on the real pretrained MiniLM backbone, one per test module."""
    from arrcoc_steer.models.minivla import MiniVLA

    return MiniVLA().eval()


@pytest.fixture(scope="module")
def items():
    """A few (observation, instruction) pairs along a scripted-expert episode."""
    from arrcoc_steer.policy_steering import observations

    return observations(("LiftRedBlock",), per_task=2, every=2)
