"""Measured effects of steering the default policy: concepts vs random controls vs prompting vs
residual directions, a strength sweep and a layer-depth ablation, in three resumable sweeps.

    python examples/steering_effects.py --out runs/steering --seeds 13 --control-seeds 3

Steps: the policy's atlas -> "fast" / "slow" / "up" concepts (keywords + embedding neighbours) ->
the same three found through the action head instead (neurons ranked by how they move each state's
expected action, an ActionReadout on expert observations), by each word's rule and by what the prompt
modifiers "quickly" / "slowly" / "and lift it high" do to the same actions -> per-neuron calibration on those observations ->
contrastive residual directions at the action queries, "quickly" - "slowly" and "and lift it
high" - no modifier, each kept in the layer where it is largest (where the modifier reaches them:
the last one in MiniVLA) -> residual maps in that layer,
from the plain instruction's activations to those with "quickly" / "slowly" / "and lift it high"
-> three sweeps on fresh seeds, every condition on the same tasks and seeds: ``eval`` (the main
table), ``controls`` (matched random neurons / directions / rotated maps, on the first
``--control-seeds`` seeds, with their own unsteered twins), ``sweeps`` (height, strength, alpha and
layer ablations) -> results.json / .csv and an HTML report each. Interrupt at any time; rerunning
resumes. ``arrcoc-steer report <out>/eval --markdown`` prints a table.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from arrcoc_steer.eval import Concept, Residual, evaluate, random_controls
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, load_policy
from arrcoc_steer.policy_steering import (observations, prompt_meaning, runner, with_modifier, write_action_concepts,
                                          write_calibration, write_concepts, write_direction, write_map)
from arrcoc_steer.readout import ActionReadout
from arrcoc_steer.steering import ResidualDirection, ResidualMap
from arrcoc_steer.viz.report import ConceptNeurons, ReportExtras, write_report

TASKS = ["LiftRedBlock", "PickRedBlockIntoTray", "PickLeftBlockIntoTray", "PutRedBlockOnPlate"]
LAYER_GROUPS = {"early": [0, 1], "middle": [2, 3], "late": [4, 5]}
ACTION_DEPTHS = {**LAYER_GROUPS, "all": [0, 1, 2, 3, 4, 5]}  # the action concepts' layer ablation
LIFT = "and lift it high"  # the height modifier; its contrast against no modifier is the "up" direction
# Calibrated clamp strengths of the concepts found through the action head, chosen on development seeds
# (7,000,000+, 12 episodes each): "fast" +20 / +25 / +24 / +28% speed at 1 / 1.25 / 1.5 / 2 (11, 11, 11,
# 9 of 12 succeed), "slow" -16 / -41 / -53% at 0.5 / 1 / 1.5 (11, 10, 5 of 12), "up" 11/12 at 0.5 and
# 6/12 at 1. The sweeps part adds the other strengths of ACTION_SWEEP, and "fast" found at each depth.
ACTION_ALPHA = {"fast": 1.5, "slow": 1.0, "up": 0.5}
# The same words found from what the policy does with them: neurons whose effects match the change each
# prompt modifier makes to the readout states' actions (a PromptMeaning). Development seeds, 12 episodes:
# "slow_prompt" -34 / -52 / -58% speed at 0.5 / 0.75 / 1 (10, 2, 0 of 12 succeed); "up_prompt" peak
# +1 / +3 / +7 / +1% at 0.5 / 1 / 2 / 3 (11, 12, 12, 4 of 12); "fast_prompt" +19 / +25% at 1.5 / 2.5 (10, 0).
PROMPT_CONCEPTS = {"fast_prompt": "quickly", "slow_prompt": "slowly", "up_prompt": LIFT}
ACTION_ALPHA |= {"fast_prompt": 1.5, "slow_prompt": 0.5, "up_prompt": 2.0}
ACTION_SWEEP = {"fast": (0.5, 1.0, 2.0), "slow": (0.5, 1.0, 2.0), "up": (1.0,), "up_prompt": (1.0,)}


def sweeps(files: dict[str, Path], reach: list[int], alpha: float, alphas: list[float], n_controls: int,
           strengths: list[float], n_action_controls: int = 20) -> dict[str, list]:  # fmt: skip
    """The three sweeps' conditions, most important first within each (a sweep runs condition by
    condition, so one cut short still holds its first rows). ``reach``: the layers where the
    modifier reaches the action queries (the maps and ``concepts_reach`` live there)."""
    neurons = dict(concepts=str(files["concepts"]), unit="calibrated", calibration=str(files["calibration"]),
                   mode="clamp", alpha=alpha)  # fmt: skip
    at_reach = {name: Concept(**{**neurons, "concepts": str(files["concepts_reach"])}, concept=name, positions="action",
                              layers=reach) for name in ("fast", "slow", "up")}  # fmt: skip
    maps = {m: Residual(direction=str(files[f"map_{m}"]), strength=1.0, positions="action")
            for m in ("quickly", "slowly")}  # fmt: skip
    main_strength, *other_strengths = strengths
    residual = {s: Residual(direction=str(files["direction"]), strength=s, positions="action")
                for s in (main_strength, -main_strength)}  # fmt: skip
    prompts = [{"kind": "unsteered"}, *({"kind": "prompt", "modifier": m} for m in ("quickly", "slowly"))]
    lift = [{"kind": "prompt", "modifier": LIFT},
            Residual(direction=str(files["map_lift"]), strength=1.0, positions="action")]
    all_layers = [Concept(**neurons, concept=name) for name in ("fast", "slow", "up")]  # the paper's rule

    def by_action(name: str, a: float, depth: str | None = None) -> Concept:
        concepts = files[f"concepts_action_{depth}" if depth else "concepts_action"]
        return Concept(**{**neurons, "concepts": str(concepts), "alpha": a}, concept=name, positions="action",
                       name=f"action_{name}_clamp{a:g}cal" + (f"_{depth}" if depth else ""))  # fmt: skip

    action = {name: by_action(name, a) for name, a in ACTION_ALPHA.items()}
    main = [*prompts, *action.values(), *maps.values(), *residual.values(), *at_reach.values(), *all_layers, *lift]
    controls = [{"kind": "unsteered"}, action["slow"], action["fast"], action["slow_prompt"], action["up_prompt"],
                *random_controls(action["slow"], n_action_controls), *random_controls(action["slow_prompt"], n_controls),
                *random_controls(action["up_prompt"], n_controls), action["up"], *random_controls(action["up"], n_controls),
                *random_controls(action["fast"], n_action_controls),
                *maps.values(), *residual.values(), at_reach["slow"], at_reach["fast"],
                *random_controls(maps["quickly"], n_controls), *random_controls(maps["slowly"], n_controls),
                *random_controls(residual[main_strength], n_controls),
                *random_controls(at_reach["slow"], n_controls), *random_controls(at_reach["fast"], n_controls)]
    ablations = [{"kind": "unsteered"},
                 *(by_action(name, a) for name, sweep in ACTION_SWEEP.items() for a in sweep if a != ACTION_ALPHA[name]),
                 *(by_action("fast", ACTION_ALPHA["fast"], depth) for depth in ACTION_DEPTHS),
                 Residual(direction=str(files["map_lift"]), strength=0.5, positions="action"),
                 *(Residual(direction=str(files["map_quickly"]), strength=s, positions="action") for s in (0.5, 2.0)),
                 Residual(direction=str(files["direction_lift"]), strength=main_strength, positions="action"),
                 *(Residual(direction=str(files["direction"]), strength=sign * s, positions="action")
                   for s in other_strengths for sign in (1, -1)),
                 *(Concept(**{**neurons, "alpha": a}, concept="fast") for a in alphas if a != alpha),
                 *(Concept(**neurons, concept="fast", layers=layers) for layers in LAYER_GROUPS.values())]  # fmt: skip
    return {"eval": main, "controls": controls, "sweeps": ablations}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--out", default="runs/steering")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--seeds", type=int, default=13, help="fresh seeds per task (13 x 4 tasks = 52 episodes per condition)")
    p.add_argument("--alpha", type=float, default=4.0, help="calibrated clamp strength of the main comparison")
    p.add_argument("--alphas", type=float, nargs="+", default=[2, 4, 6, 8, 10, 20], help="alpha sweep")
    p.add_argument("--controls", type=int, default=20, help="random-neuron controls per concept")
    p.add_argument("--action-controls", type=int, default=20,
                   help="random-neuron controls of the concepts found through the action head (more resolve a percentile finer)")
    p.add_argument("--strengths", type=float, nargs="+", default=[2.0, 1.0, 3.0],
                   help="residual strengths, in multiples of the mean contrast (the first is the main comparison)")
    p.add_argument("--control-seeds", type=int, default=3, help="seeds per task of the random-control sweep")
    p.add_argument("--parts", nargs="+", choices=["eval", "controls", "sweeps"], default=["eval", "controls", "sweeps"])
    p.add_argument("--workers", type=int)
    p.add_argument("--max-steps", type=int, help="cap on episode length (smoke runs)")
    p.add_argument("--backend", default="local")
    p.add_argument("--no-video", action="store_true", help="write no mp4 (else one per task and condition, seed 1)")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = load_policy(args.policy)
    depths = [f"concepts_action_{depth}" for depth in ACTION_DEPTHS]
    files = {name: out / f"{name}.{'yaml' if name.startswith('concepts') else 'safetensors'}"
             for name in ("concepts", "concepts_reach", "concepts_action", "calibration", "readout", "direction",
                          "direction_lift", "map_quickly", "map_slowly", "map_lift", "readout_all", *depths)}  # fmt: skip
    found = write_concepts(policy, files["concepts"], cache=out / "cache")
    if not all(files[k].exists() for k in ("calibration", "direction", "direction_lift")):
        items = observations(args.tasks, per_task=12)
        write_calibration(policy, files["calibration"], items)
        for name, (positive, negative) in {"direction": ("quickly", "slowly"), "direction_lift": (LIFT, "")}.items():
            write_direction(policy, files[name], positive, negative, items=items, positions="action", normalize=False,
                            top_layers=1, name=name)  # fmt: skip
    reach = list(ResidualDirection.load(files["direction"]).layers)  # where "quickly" / "slowly" reach the actions
    if not all(files[f"map_{m}"].exists() for m in ("quickly", "slowly", "lift")):
        items = observations(args.tasks, per_task=60, every=2, seed=100)  # a linear map wants more pairs
        for m, modifier in {"quickly": "quickly", "slowly": "slowly", "lift": LIFT}.items():
            write_map(policy, files[f"map_{m}"], modifier, layers=reach, items=items, name=f"map_{m}")
    held_out = observations(args.tasks, per_task=15, every=2, seed=900)
    for m, modifier in {"quickly": "quickly", "slowly": "slowly", "lift": LIFT}.items():
        source = [{**it, "instruction": with_modifier(it["instruction"], "")} for it in held_out]
        target = [{**it, "instruction": with_modifier(it["instruction"], modifier)} for it in held_out]
        r2 = ResidualMap.load(files[f"map_{m}"]).score(policy, source, target, run=runner(64))
        print(f"map {m!r}: held-out R^2 per action query", {l: [round(float(v), 3) for v in r] for l, r in r2.items()})
    found += [replace(c, name=f"{c.name} (layers {reach})")
              for c in write_concepts(policy, files["concepts_reach"], cache=out / "cache", layers=reach)]
    items = observations(args.tasks, per_task=12)
    found += [replace(c, name=f"{c.name} (through the action head)")
              for c in write_action_concepts(policy, files["concepts_action"], readout=files["readout"], items=items,
                                            modifiers=PROMPT_CONCEPTS)]
    rules = ActionReadout.load(files["readout"]).actions  # the expected actions of the same states
    for name, modifier in PROMPT_CONCEPTS.items():
        rule = name.removesuffix("_prompt")
        agree = prompt_meaning(policy, items, modifier, plain=rules).agreement(rule, rules)
        print(f"what {modifier!r} does to the actions, against the {rule!r} rule: cosine {agree:.2f}")
    # "fast" found in each depth's layers alone, for the layer ablation: one readout at every layer
    # (fitted by the first call, the widest), searched a depth at a time
    for depth, layers in sorted(ACTION_DEPTHS.items(), key=lambda kv: -len(kv[1])):
        write_action_concepts(policy, files[f"concepts_action_{depth}"], ("fast",), readout=files["readout_all"],
                              items=items, layers=layers)  # fmt: skip
    plan = sweeps(files, reach, args.alpha, args.alphas, args.controls, args.strengths, args.action_controls)
    frames = None if args.no_video else "agentview"
    folders = []
    for part in args.parts:
        seeds = args.control_seeds if part == "controls" else args.seeds
        results = evaluate(args.policy, args.tasks, plan[part], seeds, out / part, workers=args.workers,
                           backend=args.backend, frames=frames if part == "eval" else None, video_seeds=1,
                           max_steps=args.max_steps)  # fmt: skip
        print(results.format(["success", "speed_w", "peak_ee_z"]))
        folders.append(out / part)
    from arrcoc_steer.atlas import NeuronAtlas

    atlas = NeuronAtlas.build(policy, cache=out / "cache", progress=False)
    extras = ReportExtras(
        title="Steering MiniVLA: concepts, controls, prompts and residual directions",
        concepts=[ConceptNeurons(c.name, c.keywords, [(l, n, atlas.tokens(l, n, k=6)) for l, n in c.neurons])
                  for c in found],  # fmt: skip
    )
    for folder in folders:
        print(write_report(folder, folder.with_suffix(".html"), extras))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
