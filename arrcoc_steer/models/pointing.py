"""How well MiniVLA points at what the instruction names, on held-out demonstration frames.

The action head reads a pointer: per camera, where the policy believes the gripper, the target and
the destination are (:func:`~arrcoc_steer.models.minivla.pointer_features`). With the simulator's
true pointer instead, 23 of 24 development episodes succeed against 11 of 24 with the policy's own
(``examples/oracle_pointer.py``), so this error is the policy's perception bottleneck. It is measured
here on the training run's held-out episodes, on their first frames by default: where the policy
decides which block to fetch, before the gripper's motion gives the answer away.

    python -m arrcoc_steer.models.pointing --model arrcoc_steer/checkpoints/minivla --data data/demos data/demos_dart

Held-out episodes are few (5%); ``--fresh N`` instead resets each task's simulator at N fresh seeds
and measures the first frame, per task: how the grounding generalises to new scenes (the
policy released before perception data was added: 3% of PickYellowBlockIntoTray's training first frames
beyond 0.1, 12.5% of 40 fresh ones).

    python -m arrcoc_steer.models.pointing --model arrcoc_steer/checkpoints/minivla --fresh 40 --budget 400
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import FrameDataset
from .minivla import GROUNDING_CLASSES, POINTED, MiniVLA

FAR = 0.1  # a pointer further than this (fraction of the image, mean of |dx| and |dy|) is at another object


def scene_pointer(env, n_cameras: int = 2) -> torch.Tensor:
    """The pointer the simulator's segmentation implies for ``env``'s current frame (1, n_cam, K, 3):
    what the grounding is trained toward."""
    from envs.grounding import scene_grounding

    from ..train import true_pointer

    return true_pointer(torch.from_numpy(scene_grounding(env.unwrapped))[None], n_cameras)


def agent_view_error(pointer: torch.Tensor, truth: torch.Tensor, name: str) -> np.ndarray:
    """Per frame, mean |dx|, |dy| (image fractions) of the agent-view pointer of class ``name``;
    NaN where the class is not in view."""
    k = POINTED.index(GROUNDING_CLASSES.index(name))
    err = (pointer[:, 0, k, :2].float().cpu() - truth[:, 0, k, :2]).abs().mean(-1)
    return torch.where(truth[:, 0, k, 2] > 0, err, torch.nan).numpy()


@torch.no_grad()
def pointer_errors(model: MiniVLA, data: FrameDataset, rows: np.ndarray, budget: int = 100, batch_size: int = 32,
                   progress: bool = True) -> dict[str, np.ndarray]:  # fmt: skip
    """Agent-view pointer error (mean of |dx| and |dy|, image fractions) of the target and the
    destination at each frame of ``rows``; NaN where the class is not in view."""
    from ..train import true_pointer

    if not data.has_grounding:
        raise ValueError("pointer errors need grounding labels (datasets written by `arrcoc-steer collect`)")
    errors = {name: [] for name in ("target", "destination")}
    for i in tqdm(range(0, len(rows), batch_size), desc="pointer errors", disable=not progress):
        b = data.batch(rows[i : i + batch_size])
        out, _, _ = model.observe(b, b["instruction"], budget=budget)
        truth = true_pointer(torch.from_numpy(b["grounding"]), model.grid_cameras)
        for name in errors:
            errors[name].append(agent_view_error(out.pointer, truth, name))
    return {name: np.concatenate(e) for name, e in errors.items()}


@torch.no_grad()
def fresh_scene_errors(model: MiniVLA, task: str, seeds: list[int], budget: int = 100) -> dict[str, np.ndarray]:
    """Agent-view pointer error of the target and the destination on the first frame of ``task`` reset
    at each of ``seeds`` (NaN where the class is not in view)."""
    import envs

    errors = {name: [] for name in ("target", "destination")}
    env = envs.make(task)
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            truth = scene_pointer(env, model.grid_cameras)
            out, _, _ = model.observe(obs, obs["instruction"], budget=budget)
            for name in errors:
                errors[name].append(agent_view_error(out.pointer, truth, name))
    finally:
        env.close()
    return {name: np.concatenate(e) for name, e in errors.items()}


def summarize(errors: np.ndarray, groups: np.ndarray) -> dict:
    """Per group and overall: frames in view, mean error and the share further than ``FAR``."""
    out = {}
    for group in [*dict.fromkeys(groups.tolist()), "all"]:
        e = errors[(groups == group) | (group == "all")]
        e = e[~np.isnan(e)]
        out[group] = {"frames": int(len(e)), "mean_error": float(e.mean()) if len(e) else None,
                      "far": float((e > FAR).mean()) if len(e) else None}  # fmt: skip
    return out


def report(model_dir: str | Path, data: list[str], max_t: int = 3, budget: int = 100, holdout_frac: float | None = None,
           seed: int | None = None, progress: bool = True, device: str = "auto", split: str = "held-out",
           by: str = "suite") -> dict:  # fmt: skip
    """Pointer errors per suite (or ``by="task"``) on the first ``max_t + 1`` frames of the training run's
    held-out episodes (``split="train"``: its training episodes, to compare memorisation with generalisation)."""
    from ..train import pick_device, run_split

    if split not in ("held-out", "train") or by not in ("suite", "task"):
        raise ValueError(f"split must be 'held-out' or 'train' and by 'suite' or 'task', got {split!r}, {by!r}")
    model = MiniVLA.from_pretrained(model_dir, pick_device(device)).eval()
    frames = FrameDataset(data)
    rows = run_split(model, frames, holdout_frac, seed)[split == "held-out"]
    rows = rows[frames.index[rows, 1] <= max_t]
    groups = np.array([frames.episodes[e].meta.get(by, "?") for e, _ in frames.index[rows]])
    errors = pointer_errors(model, frames, rows, budget, progress=progress)
    return {"split": split, "max_t": max_t, "budget": budget, "grounding": model.config.grounding,
            **{name: summarize(e, groups) for name, e in errors.items()}}  # fmt: skip


def fresh_report(model_dir: str | Path, tasks: list[str], n_seeds: int, seed_base: int = 8_000_000, budget: int = 100,
                 progress: bool = True, device: str = "auto") -> dict:  # fmt: skip
    """Pointer errors per task (and overall) on the first frames of ``n_seeds`` fresh scenes per task."""
    from ..eval import fresh_seeds
    from ..eval.sweep import resolve_tasks
    from ..train import pick_device

    model = MiniVLA.from_pretrained(model_dir, pick_device(device)).eval()
    names = resolve_tasks(tasks)
    seeds = fresh_seeds(n_seeds, seed_base)
    per_task = [fresh_scene_errors(model, t, seeds, budget) for t in tqdm(names, desc="fresh scenes", disable=not progress)]
    groups = np.repeat(names, len(seeds))
    return {"fresh_seeds": n_seeds, "seed_base": seed_base, "budget": budget, "grounding": model.config.grounding,
            **{name: summarize(np.concatenate([e[name] for e in per_task]), groups) for name in ("target", "destination")}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--data", nargs="+", help="the dataset directories the model was trained on (held-out mode)")
    p.add_argument("--fresh", type=int, metavar="N", help="instead: the first frame of N fresh scenes per task")
    p.add_argument("--tasks", nargs="+", default=["all"], help="with --fresh: task or suite names (default: all)")
    p.add_argument("--seed-base", type=int, default=8_000_000, help="with --fresh: first seed (default: %(default)s)")
    p.add_argument("--max-t", type=int, default=3, help="frames 0..max_t of each held-out episode (default: %(default)s)")
    p.add_argument("--split", choices=("held-out", "train"), default="held-out",
                   help="with --data: the run's held-out or its training episodes (default: %(default)s)")
    p.add_argument("--by", choices=("suite", "task"), default="suite", help="with --data: group per suite or per task")
    p.add_argument("--budget", type=int, default=100, help="visual tokens, uniform allocation (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    args = p.parse_args(argv)
    if args.fresh:
        result = fresh_report(args.model, args.tasks, args.fresh, args.seed_base, args.budget, device=args.device)
    elif args.data:
        result = report(args.model, args.data, args.max_t, args.budget, device=args.device, split=args.split, by=args.by)
    else:
        p.error("give --data (held-out demonstration frames) or --fresh N (fresh scenes)")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
