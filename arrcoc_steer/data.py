"""Training frames from the demo datasets written by ``envs.dataset``, read by memory map.

Each episode is a safetensors file (``agentview``, ``wrist``, ``state``, ``action`` arrays plus JSON
metadata). Training samples random frames across thousands of episodes, so files are mapped, not
loaded: a batch copies only the frames it uses, and the page cache does the rest. The safetensors
layout (8-byte header size, JSON header, raw little-endian data) is read directly; nothing is
unpickled.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError, ConfigError

_DTYPES = {"U8": np.uint8, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "BOOL": np.bool_}
FRAME_KEYS = ("agentview", "wrist", "state", "action")
GROUNDING_KEY = "grounding"  # optional (T, n_cam * cells, classes) uint8 pixel counts per feature cell


def map_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Memory-map every tensor of a safetensors file; returns (arrays, metadata).

    One map per file, the tensors views into it: each map holds a file descriptor, and a training set
    of thousands of short episodes (``collect --max-steps``) would otherwise exhaust the process's limit.
    """
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {}) or {}
    whole = np.memmap(path, np.uint8, "r")
    arrays = {}
    for name, spec in header.items():
        if spec["dtype"] not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        arrays[name] = whole[8 + n + start : 8 + n + end].view(_DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return arrays, meta


def episode_metadata(meta: dict[str, str]) -> dict:
    """The episode's JSON metadata (task, instruction, modifiers, seed, success ...)."""
    out: dict = {}
    for key, value in meta.items():
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            parsed = value
        if isinstance(parsed, dict):
            out.update(parsed)
        else:
            out[key] = parsed
    return out


@dataclass
class Episode:
    path: Path
    arrays: dict[str, np.memmap]
    meta: dict

    def __len__(self) -> int:
        return len(self.arrays["action"])


class FrameDataset:
    """Every frame of every successful episode under one or more dataset directories."""

    def __init__(self, roots: list[str | Path], only_successful: bool = True):
        files = sorted(p for r in roots for p in Path(r).rglob("*.safetensors"))
        if not files:
            raise ConfigError(f"no episode files (*.safetensors) under {[str(r) for r in roots]}; run `arrcoc-steer collect` first")
        self.episodes: list[Episode] = []
        for p in files:
            arrays, meta = map_safetensors(p)
            missing = [k for k in FRAME_KEYS if k not in arrays]
            if missing:
                raise CheckpointError(f"{p} lacks arrays {missing}; expected {FRAME_KEYS}")
            info = episode_metadata(meta)
            if only_successful and info.get("success") is False:
                continue
            if "instruction" not in info:
                raise CheckpointError(f"{p} has no 'instruction' in its metadata")
            self.episodes.append(Episode(p, arrays, info))
        self.has_grounding = bool(self.episodes) and all(GROUNDING_KEY in e.arrays for e in self.episodes)
        lengths = np.array([len(e) for e in self.episodes])
        self.index = np.stack(
            [np.repeat(np.arange(len(lengths)), lengths), np.concatenate([np.arange(n) for n in lengths])], 1
        )  # (n_frames, 2): episode, step

    def __len__(self) -> int:
        return len(self.index)

    def split(self, holdout_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, held-out rows): whole episodes held out, drawn from ``seed`` (training's and
        the gripper calibration's held-out frames are the same)."""
        held = np.random.default_rng(seed).random(len(self.episodes)) < holdout_frac
        is_val = held[self.index[:, 0]]
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def batch(self, rows: np.ndarray) -> dict:
        """Frames at ``rows`` of the index -> stacked numpy arrays + instructions."""
        keys = FRAME_KEYS + ((GROUNDING_KEY,) if self.has_grounding else ())
        out = {k: [] for k in keys}
        instructions = []
        for e, t in self.index[rows]:
            ep = self.episodes[e]
            for k in keys:
                out[k].append(ep.arrays[k][t])
            instructions.append(ep.meta["instruction"])
        batch = {k: np.stack(v) for k, v in out.items()}
        batch["instruction"] = instructions
        return batch


def random_observation(rng: np.random.Generator, batch: int | None = None) -> dict[str, np.ndarray]:
    """An observation of random pixels and state (one, or ``batch`` stacked): for tests and timing."""
    lead = () if batch is None else (batch,)
    return {
        "agentview": rng.integers(0, 256, (*lead, 128, 128, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (*lead, 128, 128, 3), dtype=np.uint8),
        "state": rng.normal(size=(*lead, 9)).astype(np.float32),
    }


def write_random_episodes(directory: str | Path, n: int = 4, length: int = 12, seed: int = 0) -> None:
    """``n`` episode files in the dataset format with random content and grounding labels: what tests
    and benchmarks train on when the timing or the plumbing, not the behaviour, is measured."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for e in range(n):
        arrays = random_observation(rng, length)
        arrays["action"] = rng.uniform(-1, 1, (length, 7)).astype(np.float32)
        # every 8x8 cell of both cameras split into random class counts summing to 64
        split = np.sort(rng.integers(0, 65, (length, 512, 4)), -1)
        edges = np.concatenate([np.zeros((length, 512, 1)), split, np.full((length, 512, 1), 64)], -1)
        arrays[GROUNDING_KEY] = np.diff(edges, axis=-1).astype(np.uint8)
        meta = {"instruction": ["put the red block in the tray", "lift the blue block quickly"][e % 2], "success": True}
        save_file(arrays, str(directory / f"episode_{e:05d}.safetensors"), metadata={"episode": json.dumps(meta)})
