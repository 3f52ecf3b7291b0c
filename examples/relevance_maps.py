"""See ARR-COC relevance on a rendered tabletop: maps, budgets, two instructions, an episode video.

    MUJOCO_GL=egl python examples/relevance_maps.py --out relevance_out --budget 100 --steps 80

Writes ``relevance.png`` (every way of knowing, the relevance, the budget, the dominant way and the
tensions for the env's own instruction), ``compare.png`` (the same scene under two instructions,
``--compare``, by default the red and the blue block, with the IoU of their detailed regions) and
``episode.mp4`` (the scripted expert doing the task while the budget follows the instruction and,
through a gripper steering bias, the hand) and ``phase.png`` (the episode's last step with the block
held, as the reaching weights would allocate it and as the carrying ones do: relevance/phase.py).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering (DESIGN.md)
import envs  # noqa: E402
from arrcoc_steer.regions import CAMERAS  # noqa: E402
from arrcoc_steer.relevance import RelevanceAllocator, Steer, gripper_pixels, query_sensitivity_iou  # noqa: E402
from arrcoc_steer.viz.relevance import plot_instructions, plot_relevance, write_episode_video  # noqa: E402
from envs.expert import ScriptedExpert  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--task", default="PickRedBlockIntoTray", help="an object-suite task has all four blocks")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--budget", type=int, default=100, help="visual tokens, 64..400")
parser.add_argument("--steps", type=int, default=80, help="episode steps in the video (0: no video)")
parser.add_argument("--out", default="relevance_out")
parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                    default=("put the red block in the tray", "put the blue block in the tray"),
                    help='two instructions for compare.png, e.g. "pick the left block" "pick the right block"')
args = parser.parse_args()

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
allocator = RelevanceAllocator()
env = envs.make(args.task)
obs, info = env.reset(seed=args.seed)
images = np.stack([obs[c] for c in CAMERAS])

result = allocator(obs, budget=args.budget)  # the env's instruction rides in obs["instruction"]
plot_relevance(result, images, out / "relevance.png")
print(result.query.describe())
print(result.explain("agentview", int(result.relevance[0].argmax())))

a, b = (allocator(obs, text, budget=args.budget) for text in args.compare)
plot_instructions([a, b], images, out / "compare.png")
print(f"query sensitivity (IoU of detailed regions, {args.compare[0]!r} vs {args.compare[1]!r}): "
      f"{query_sensitivity_iou(a.allocation, b.allocation):.2f}")

if args.steps:
    expert, steps, times, held = ScriptedExpert(env), [], [], None
    for _ in range(args.steps):
        t = time.perf_counter()
        hand = gripper_pixels(env.unwrapped.camera_matrix, info["ee_pos"], cameras=("agentview",))
        r = allocator(obs, budget=args.budget, steer=[Steer("gripper", 0.3)], gripper_px=hand)
        times.append(time.perf_counter() - t)
        steps.append((np.stack([obs[c] for c in CAMERAS]), r))
        held = obs if r.phase == "carry" else held
        obs, _, terminated, truncated, info = env.step(expert.act())
        if terminated or truncated:
            break
    write_episode_video(steps, out / "episode.mp4", fps=10)
    if held is not None:
        pair = [allocator(held, budget=args.budget, phase=p) for p in ("reach", "carry")]
        plot_instructions(pair, np.stack([held[c] for c in CAMERAS]), out / "phase.png")
    print(f"episode: {len(steps)} steps, success={info['success']}, relevance {1e3 * np.median(times):.2f} ms/step (median)")
env.close()
print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} in {out}/")
