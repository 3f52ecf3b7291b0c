"""Cached backbone outputs, so the action head or the grounding correction can be refitted for many
epochs in minutes.

With the backbone and vision frozen (``arrcoc-steer train --train-only head``), everything upstream
of :meth:`MiniVLA.action_head` is a fixed function of (images, allocation, instruction, state). One
forward pass over N training frames (each with its own random shift and random allocation, drawn as
training draws them) stores what the head reads: the backbone's output at the 7 action queries, the
predicted pointer, the true pointer and the action. Fitting the head on that cache costs ~1 ms per
sample instead of ~27 ms on the 2-core CPU, so it sees each frame many times.

``--train-only grounding`` caches what :meth:`MiniVLA.ground` reads instead (:class:`GroundingCache`):
per visual token the backbone's output and the CNN token that went in, the instruction's summary,
the token geometry, the token's class labels, and the true pointer. Visual tokens number 64..400 by
budget, so that cache is kept as chunks, one per forward pass, each one training batch at one budget.

A cache is a safetensors file whose metadata names what it was built from (a hash of the weights
upstream of the action head, the frames, the seed and the sampling settings); :func:`load_or_build`
rebuilds it when any of them differ, never reuses a stale one. A head refit started from another
refit's model (``--init runs/A/model``, same frames and settings) takes runs/A's cache instead of
rebuilding it: in the shipped recipe, stage 8 can take stage 7's (32,000 frames, ~19 min to build).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

FORMAT = "arrcoc-head-cache-v1"
FIELDS = ("action_hidden", "pointer", "true_pointer", "action", "state")


@dataclass
class HeadCache:
    """What the action head reads, for N frames: ``action_hidden`` (N, 7, d) bf16, ``pointer`` and
    ``true_pointer`` (N, n_cam, 3, 3), ``action`` (N, 7), ``state`` (N, 9)."""

    action_hidden: torch.Tensor
    pointer: torch.Tensor
    true_pointer: torch.Tensor
    action: torch.Tensor
    state: torch.Tensor

    def __len__(self) -> int:
        return len(self.action)

    def to(self, device: torch.device) -> HeadCache:
        return HeadCache(*(getattr(self, f).to(device) for f in FIELDS))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> HeadCache:
        return cls(*(tensors[f] for f in FIELDS))


GROUNDING_FIELDS = ("visual_out", "visual_in", "text", "geom", "labels", "true_pointer")


@dataclass
class GroundingCache:
    """What the grounding heads read, as chunks of frames that share one visual budget; each chunk
    holds ``visual_out``, ``visual_in`` (n, T, d) bf16, ``text`` (n, d) bf16, ``geom`` (n, T, 4),
    ``labels`` (n, T, C) (the class mix of the pixels each token pools) and ``true_pointer``."""

    chunks: list[dict[str, torch.Tensor]]

    def __len__(self) -> int:
        return sum(len(c["text"]) for c in self.chunks)

    def to(self, device: torch.device) -> GroundingCache:
        return GroundingCache([{k: v.to(device) for k, v in c.items()} for c in self.chunks])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, c in enumerate(self.chunks) for k, v in c.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> GroundingCache:
        n = 1 + max(int(k.split(".")[0]) for k in tensors)
        return cls([{f: tensors[f"{i}.{f}"] for f in GROUNDING_FIELDS} for i in range(n)])


def save(cache: HeadCache | GroundingCache, path: Path, meta: dict) -> None:
    tensors = {k: v.contiguous().cpu() for k, v in cache.tensors().items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "meta": json.dumps(meta, sort_keys=True)})


def weights_digest(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """SHA-256 of the trained tensors of a MiniVLA (what the cache's contents depend on), leaving out
    those whose names start with ``skip`` (the action head's: nothing a cache stores passes through it,
    so a refitted or widened head reuses the cache of the model it started from)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.trainable_state_dict().items()):
        if skip and name.startswith(skip):
            continue
        h.update(name.encode())
        h.update(tensor.float().numpy().tobytes())
    return h.hexdigest()[:32]


def stored_meta(path: Path) -> dict | None:
    """The metadata a cache file was built with, or None when it is missing or not a cache."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
    except Exception:  # a truncated or foreign file is simply rebuilt
        return None
    return json.loads(header["meta"]) if header.get("format") == FORMAT and "meta" in header else None


@torch.no_grad()
def build(
    rows: np.ndarray,
    forward: Callable[[np.ndarray], tuple[object, dict]],
    batch_size: int,
    desc: str,
) -> HeadCache:
    """Run ``forward(rows_chunk) -> (PolicyOutput, batch)`` over ``rows`` and keep what the head reads."""
    from .train import true_pointer

    parts: dict[str, list[torch.Tensor]] = {f: [] for f in FIELDS}
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        out, batch = forward(rows[start : start + batch_size])
        n_cam = out.pointer.shape[1]
        parts["action_hidden"].append(out.action_hidden.detach().to(torch.bfloat16).cpu())
        parts["pointer"].append(out.pointer.detach().float().cpu())
        counts = torch.from_numpy(np.asarray(batch["grounding"])) if "grounding" in batch else None
        truth = true_pointer(counts, n_cam) if counts is not None else out.pointer.detach().float().cpu()
        parts["true_pointer"].append(truth)
        parts["action"].append(torch.from_numpy(np.asarray(batch["action"], np.float32)))
        parts["state"].append(torch.from_numpy(np.asarray(batch["state"], np.float32)))
    return HeadCache(*(torch.cat(parts[f]) for f in FIELDS))


@torch.no_grad()
def build_grounding(
    rows: np.ndarray,
    forward: Callable[[np.ndarray], tuple[object, dict]],
    batch_size: int,
    desc: str,
) -> GroundingCache:
    """Run ``forward(rows_chunk) -> (PolicyOutput, batch)`` over ``rows`` and keep what the grounding
    heads read, one chunk per call."""
    from .train import token_labels, true_pointer

    chunks = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        out, batch = forward(rows[start : start + batch_size])
        seen = out.grounding_inputs
        counts = torch.from_numpy(np.asarray(batch["grounding"])).to(out.pooling.device)
        chunks.append({
            "visual_out": seen.visual_out.to(torch.bfloat16).cpu(),
            "visual_in": seen.visual_in.to(torch.bfloat16).cpu(),
            "text": seen.text.to(torch.bfloat16).cpu(),
            "geom": seen.geom.float().cpu(),
            "labels": token_labels(out.pooling, counts).cpu(),
            "true_pointer": true_pointer(counts, out.pointer.shape[1]).float().cpu(),
        })  # fmt: skip
    return GroundingCache(chunks)


def load_or_build(path: Path, meta: dict, make: Callable[[], HeadCache | GroundingCache],
                  kind: type = HeadCache, elsewhere: Sequence[Path] = ()) -> HeadCache | GroundingCache:  # fmt: skip
    """The cache (a ``kind``) at ``path`` if it was built with exactly ``meta``; else one of the files
    ``elsewhere`` that was (e.g. in the run folder of the model a refit starts from: a head refit on the
    same frames reads the same backbone outputs), copied to ``path``; else ``make()``, saved there."""
    want = json.loads(json.dumps(meta, sort_keys=True))
    tmp = path.with_name(path.name + ".tmp")
    source = next((p for p in (path, *elsewhere) if stored_meta(Path(p)) == want), None)
    if source is not None:
        if Path(source) != path:
            shutil.copyfile(source, tmp)
            tmp.replace(path)
        with safe_open(str(path), "pt") as f:
            return kind.from_tensors({k: f.get_tensor(k) for k in f.keys()})
    cache = make()
    save(cache, tmp, meta)
    tmp.replace(path)
    return cache
