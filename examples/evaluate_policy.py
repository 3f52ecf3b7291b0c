"""Evaluate a policy under several conditions, paired on the same seeds, and print the effects.

    MUJOCO_GL=egl python examples/evaluate_policy.py --policy expert --tasks goal --seeds 10
    MUJOCO_GL=egl python examples/evaluate_policy.py --policy arrcoc_steer/checkpoints/minivla --conditions conditions.yaml

Without --conditions it compares the unsteered policy with the prompting baselines ("... quickly",
"... slowly"). A conditions file is YAML or JSON, e.g.::

    conditions:
      - {kind: unsteered}
      - {kind: prompt, modifier: quickly}
      - {kind: concept, concepts: concepts.yaml, concept: fast, alpha: 4.0}
      - {kind: budget, budget: 100, allocator: relevance}

Run it again with the same --out to resume an interrupted sweep.
"""

import argparse

from arrcoc_steer.eval import Prompt, evaluate, load_conditions

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--policy", default="expert", help="'expert' or a MiniVLA checkpoint directory")
parser.add_argument("--tasks", nargs="+", default=["LiftRedBlock", "PushRedBlockToZone"], help="tasks or suites")
parser.add_argument("--seeds", type=int, default=5, help="fresh seeds per task and condition")
parser.add_argument("--conditions", help="YAML / JSON file of conditions")
parser.add_argument("--out", default="runs/evaluate_policy", help="run folder (resumed if it exists)")
parser.add_argument("--backend", default="local", choices=("local", "serial", "ray"))
parser.add_argument("--workers", type=int, default=None, help="default: all cores")
parser.add_argument("--video", choices=("agentview", "wrist"), help="write an mp4 of the first seed")
args = parser.parse_args()

conditions = load_conditions(args.conditions) if args.conditions else [
    "unsteered", Prompt(modifier="quickly"), Prompt(modifier="slowly")]
results = evaluate(args.policy, args.tasks, conditions, seeds=args.seeds, out_dir=args.out,
                   backend=args.backend, workers=args.workers, frames=args.video)
print(results.format(("success", "speed_w", "peak_target_lift")))
print(f"windows (steps): {results.windows}; {results.timing}")
print(f"results: {results.out_dir}/results.json and results.csv")
