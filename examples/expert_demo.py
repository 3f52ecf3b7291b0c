"""Run the scripted expert on one task per suite, print per-task success, write an mp4.

    MUJOCO_GL=egl python examples/expert_demo.py --episodes 2 --video expert_demo.mp4
"""

import argparse

import envs
from envs.demo import run_expert_demo

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--tasks", nargs="*", default=[envs.list_tasks(s)[0] for s in envs.SUITES])
parser.add_argument("--episodes", type=int, default=1)
parser.add_argument("--video", default="expert_demo.mp4", help="output mp4 (agentview | wrist)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--speed", choices=("slow", "normal", "fast"), default="normal")
args = parser.parse_args()

success = run_expert_demo(args.tasks, args.episodes, args.video, args.seed, modifiers={"speed": args.speed}, verbose=True)
for task, rate in success.items():
    print(f"{task:34s} success {rate:.0%}")
print(f"video: {args.video}")
