"""Calibrate MiniVLA's release decision on held-out demonstration frames.

Releasing is the rarest decision in the demos (one "open" frame per placement among near-identical
lowering frames that say "close"), so a trained policy puts P(open) ~ 0.15 on it, never a majority.
This finds the P(open) threshold at which a hand whose fingers are closed should open: the one with
the best balanced accuracy (mean of the hit rates on "open" and on "close" frames) over the held-out
episodes of the training run, and writes it to the checkpoint's config as ``release_threshold``.

    arrcoc-steer calibrate --model runs/minivla_ft/model --data data/demos data/demos_dart
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data import FrameDataset
from ..errors import ConfigError
from .minivla import CONFIG_NAME, DECODINGS, GRIPPER_DIM, MiniVLA, fingers_closed


def release_scores(model: MiniVLA, data: FrameDataset, rows: np.ndarray, budget: int = 100,
                   batch_size: int = 32, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For the frames at ``rows`` whose fingers are closed: (P(open) the policy gives, label is open)."""
    state = np.stack([data.episodes[e].arrays["state"][t] for e, t in data.index[rows]])
    rows = rows[fingers_closed(state)]
    p_open, is_open = [], []
    for i in tqdm(range(0, len(rows), batch_size), desc="release scores", disable=not progress):
        b = data.batch(rows[i : i + batch_size])
        out, _, _ = model.observe(b, b["instruction"], budget=budget)
        p_open.append(model.release_probability(out.action_logits).cpu().numpy())
        is_open.append(b["action"][:, GRIPPER_DIM] < 0)
    return np.concatenate(p_open), np.concatenate(is_open)


def best_threshold(p_open: np.ndarray, is_open: np.ndarray) -> dict:
    """The threshold (on a 0.01 grid) that maximises balanced accuracy, with its hit rates."""
    if is_open.all() or not is_open.any():
        raise ValueError("need held-out frames of both kinds (open and close) to calibrate a threshold")
    best = None
    for t in np.round(np.arange(0.01, 1.0, 0.01), 2):
        opens = p_open > t
        tpr, tnr = opens[is_open].mean(), (~opens[~is_open]).mean()
        if best is None or (tpr + tnr) / 2 > best["balanced_accuracy"]:
            best = {"threshold": float(t), "balanced_accuracy": float((tpr + tnr) / 2), "open_hit": float(tpr), "close_hit": float(tnr)}
    return {**best, "frames_open": int(is_open.sum()), "frames_close": int((~is_open).sum()),
            "median_p_open": {"open frames": float(np.median(p_open[is_open])), "close frames": float(np.median(p_open[~is_open]))}}


def calibrate(model_dir: str | Path, data: list[str], holdout_frac: float | None = None, seed: int | None = None,
              write: bool = True, progress: bool = True, device: str = "auto", decode: str | None = None) -> dict:  # fmt: skip
    """Calibrate on the training run's held-out episodes (its holdout_frac and seed, from the config's
    provenance, unless given) and, with ``write``, store the threshold in ``model_dir/config.json``
    (and ``decode``, the action decoding, when given: both are inference settings of a release)."""
    from ..train import pick_device, run_split

    model_dir = Path(model_dir)
    if decode is not None and decode not in DECODINGS:
        raise ConfigError(f"decode must be one of {DECODINGS}, got {decode!r}")
    model = MiniVLA.from_pretrained(model_dir, pick_device(device))
    frames = FrameDataset(data)
    held = run_split(model, frames, holdout_frac, seed)[1]
    result = best_threshold(*release_scores(model, frames, held, progress=progress))
    if write:
        cfg = json.loads((model_dir / CONFIG_NAME).read_text())
        cfg["release_threshold"] = result["threshold"]
        if decode is not None:
            cfg["decode"] = decode
        (model_dir / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
    return result

