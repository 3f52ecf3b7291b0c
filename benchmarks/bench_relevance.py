"""ARR-COC relevance: latency against the policy step, and allocation quality on simulator renders.

    python benchmarks/bench_relevance.py latency [--repeats 200] [--no-policy]
    python benchmarks/bench_relevance.py quality [--scenes 50] [--budgets 64 100 256 400]

latency -- median wall time of one relevance step (both 128 px cameras, ways of knowing, tensions,
allocation) over several scenes, printed as a ratio against baselines measured in the same process:
the uniform allocation (what relevance replaces) and MiniVLA's ``predict_action`` at 64 and 400
tokens (random LoRA weights: the timing does not depend on training). Issue 5's targets: relevance
<= 10% of the control step, step at 64 tokens >= 2x faster than at 400.

quality -- on rendered scenes of every suite (the instruction the env chose; segmentation "target"),
at reset or (--along-episodes) every 8 steps of scripted-expert episodes:
target-mask recall of the detailed regions, pointing game per camera; on object-suite scenes (four
blocks), query sensitivity = IoU of the detailed regions for "put the red block in the tray" vs
"put the blue block in the tray" (and green vs yellow). Random keep and uniform pooling give the
reference recall. Targets: recall >= 0.9 at B = 100, IoU <= 0.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from arrcoc_steer.regions import CAMERAS, RegionGrid  # noqa: E402
from arrcoc_steer.relevance import (  # noqa: E402
    RelevanceAllocator,
    pointing_game,
    query_sensitivity_iou,
    random_allocation,
    target_recall,
    uniform_allocation,
)


def render_scenes(task: str, n: int, first_seed: int = 0) -> list[tuple[dict, dict]]:
    """``n`` reset observations of ``task`` with their segmentation (seeds first_seed..)."""
    import envs

    env = envs.make(task, segmentation=True)
    try:
        out = []
        for seed in range(first_seed, first_seed + n):
            obs, info = env.reset(seed=seed)
            out.append((obs, info["segmentation"]))
        return out
    finally:
        env.close()


def rollout_scenes(task: str, n: int, first_seed: int = 0, every: int = 8) -> list[tuple[dict, dict]]:
    """``n`` observations taken every ``every`` steps along scripted-expert episodes of ``task``."""
    import envs
    from envs.expert import ScriptedExpert

    env = envs.make(task, segmentation=True)
    out, seed = [], first_seed
    try:
        while len(out) < n:
            obs, info = env.reset(seed=seed)
            expert, seed, done = ScriptedExpert(env), seed + 1, False
            for t in range(400):
                if t % every == every - 1:
                    out.append((obs, info["segmentation"]))
                obs, _, terminated, truncated, info = env.step(expert.act())
                if terminated or truncated or len(out) >= n:
                    break
        return out
    finally:
        env.close()


def synthetic_scenes(n: int) -> list[tuple[dict, dict]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        obs = {c: np.full((128, 128, 3), 150, np.uint8) for c in CAMERAS}
        for colour in ((220, 20, 20), (20, 66, 235), (25, 184, 41)):
            x, y = rng.integers(0, 116, 2)
            obs["agentview"][y : y + 10, x : x + 10] = colour
        obs.update(state=np.zeros(9, np.float32), instruction="put the red block in the tray")
        out.append((obs, {}))
    return out


def median_ms(fn, repeats: int) -> float:
    fn()  # warm up (caches, first-call allocations)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def latency(args) -> None:
    try:
        scenes = [s for task in ("PickRedBlockIntoTray", "PutRedInTrayThenBlueOnPlate") for s in render_scenes(task, 3)]
        source = "env renders"
    except ImportError:
        scenes, source = synthetic_scenes(6), "synthetic images (envs not importable)"
    allocator = RelevanceAllocator()
    per_scene = [
        median_ms(lambda o=obs: allocator(o, o["instruction"], budget=100), args.repeats) for obs, _ in scenes
    ]  # fmt: skip
    relevance = statistics.median(per_scene)
    uniform = median_ms(lambda: uniform_allocation(100), args.repeats)
    print(f"scenes: {len(scenes)} {source}; {args.repeats} repeats each; median over scenes")
    print(f"relevance step (2 x 128 px, B=100)   {relevance:8.3f} ms   (scenes: {min(per_scene):.3f}..{max(per_scene):.3f})")
    print(f"uniform allocation (baseline)        {uniform:8.3f} ms   relevance / uniform = {relevance / uniform:6.1f}x")
    if args.no_policy:
        return
    import torch

    from arrcoc_steer.models.minivla import MiniVLA

    torch.manual_seed(0)
    policy = MiniVLA().eval()
    obs = scenes[0][0]
    steps = {}
    for budget in (64, 100, 400):
        alloc = uniform_allocation(budget)
        n = max(args.repeats // 10, 10)
        steps[budget] = median_ms(lambda a=alloc: policy.predict_action(obs, obs["instruction"], allocation=a), n)
        print(f"MiniVLA predict_action, B={budget:<3d}       {steps[budget]:8.3f} ms   relevance / step = {relevance / steps[budget]:6.1%}")
    print(f"step at 64 tokens vs 400: {steps[400] / steps[64]:.2f}x faster (torch threads: {torch.get_num_threads()})")


def quality(args) -> None:
    allocator, grid = RelevanceAllocator(), RegionGrid()
    tasks = args.tasks or ["PickLeftBlockIntoTray", "PickRightBlockIntoTray", "PickFrontBlockIntoTray",
                           "PickBlockClosestToTrayIntoTray", "PickRedBlockIntoTray", "PickBlueBlockIntoTray",
                           "PutRedBlockOnPlate", "PushRedBlockToZone", "PutRedInTrayThenBlueOnPlate"]  # fmt: skip
    per_task = max(1, args.scenes // len(tasks))
    keys = ("recall", "recall_av", "recall_wr", "random", "uniform", "point_av", "point_wr")
    rows = {b: {k: [] for k in keys} for b in args.budgets}
    only = lambda alloc, cam: np.where(np.arange(len(CAMERAS))[:, None] == cam, alloc, 1)  # other camera: 1 token
    for task in tasks:
        sample = rollout_scenes if args.along_episodes else render_scenes
        scenes = sample(task, per_task, first_seed=1000)
        task_recall = []
        for obs, seg in scenes:
            masks = np.stack([seg[c]["target"] for c in CAMERAS])
            for b in args.budgets:
                r = allocator(obs, obs["instruction"], budget=b)
                rec = target_recall(r.allocation, masks, grid)
                rows[b]["recall"].append(rec)
                for cam, key in ((0, "recall_av"), (1, "recall_wr")):
                    seen = np.where(np.arange(len(CAMERAS))[:, None, None] == cam, masks, False)
                    rows[b][key].append(target_recall(only(r.allocation, cam), seen, grid))
                rows[b]["random"].append(target_recall(random_allocation(b, seed=len(rows[b]["random"])), masks, grid))
                rows[b]["uniform"].append(target_recall(uniform_allocation(b), masks, grid))
                av, wr = pointing_game(r.relevance, masks, grid)
                rows[b]["point_av"].append(av)
                rows[b]["point_wr"].append(wr)
                if b == 100:
                    task_recall.append(rec)
        print(f"  {task:34s} recall@100 {np.nanmean(task_recall):.3f}  ({per_task} scenes)  e.g. {obs['instruction']!r}")
    print(f"\nrecall / pointing over {per_task * len(tasks)} scenes (recall: fraction of target pixels in detailed regions)")
    print("(all pixels; per camera where it sees the target; random keep and uniform pooling for reference)")
    print("budget  recall  agentview  wrist   random-keep  uniform   pointing: agentview  wrist")
    for b, v in rows.items():
        m = {k: np.nanmean(x) for k, x in v.items()}
        print(f"{b:6d}  {m['recall']:.3f}   {m['recall_av']:.3f}      {m['recall_wr']:.3f}   {m['random']:.3f}"
              f"        {m['uniform']:.3f}     {m['point_av']:.3f}               {m['point_wr']:.3f}")  # fmt: skip

    sample = rollout_scenes if args.along_episodes else render_scenes
    scenes = sample("PickRedBlockIntoTray", args.scenes, first_seed=2000)  # four blocks + tray
    pairs = (("red", "blue"), ("green", "yellow"))
    print(f"\nquery sensitivity over {len(scenes)} object-suite scenes (IoU of detailed regions; lower = more query-aware)")
    for b in args.budgets:
        ious, recalls = [], []
        for obs, seg in scenes:
            for a, c in pairs:
                allocs = {}
                for colour in (a, c):
                    r = allocator(obs, f"put the {colour} block in the tray", budget=b)
                    allocs[colour] = r.allocation
                    recalls.append(target_recall(r.allocation, np.stack([seg[k][f"{colour}_block"] for k in CAMERAS]), grid))
                ious.append(query_sensitivity_iou(allocs[a], allocs[c]))
        print(f"  B={b:<4d} IoU mean {np.mean(ious):.3f} (median {np.median(ious):.3f}, 90th pct {np.percentile(ious, 90):.3f})"
              f"   recall of the named block {np.nanmean(recalls):.3f}")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--repeats", type=int, default=200)
    lat.add_argument("--no-policy", action="store_true", help="skip the MiniVLA step baseline")
    q = sub.add_parser("quality")
    q.add_argument("--scenes", type=int, default=54)
    q.add_argument("--budgets", type=int, nargs="+", default=[64, 100, 256, 400])
    q.add_argument("--tasks", nargs="*")
    q.add_argument("--along-episodes", action="store_true",
                   help="score observations every 8 steps of scripted-expert episodes instead of resets")
    args = parser.parse_args(argv)
    {"latency": latency, "quality": quality}[args.command](args)


if __name__ == "__main__":
    main()
