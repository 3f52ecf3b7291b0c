"""The ``arrcoc-steer`` command: one subcommand per verb, each a thin layer over a library function.

    arrcoc-steer envs                      list suites and tasks
    arrcoc-steer collect --episodes 40     scripted-expert demos -> data/demos
    arrcoc-steer train --data data/demos   behaviour-clone MiniVLA
    arrcoc-steer calibrate --model M --data D    its release threshold, from held-out demo frames
    arrcoc-steer reproduce recipe.yaml     a whole training recipe (collect, train, calibrate), resumable
    arrcoc-steer atlas --search fast       the neuron atlas of the policy
    arrcoc-steer concepts fast=fast,quick/slow   concept neurons -> concepts.yaml
    arrcoc-steer concepts fast slow --action     ... found by what they do to the actions instead
    arrcoc-steer concepts --action --modifier up_prompt='and lift it high'   ... that do what a prompt does
    arrcoc-steer direction quickly slowly  a contrastive residual direction
    arrcoc-steer eval --tasks goal         closed-loop evaluation under conditions
    arrcoc-steer sweep sweep.yaml          the same, from a YAML file
    arrcoc-steer report runs/eval          the HTML report of a run (--markdown: its effects table)
    arrcoc-steer demo                      the whole loop on the shipped policy

Run ``arrcoc-steer <verb> --help`` for every flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from .allocator import keep_freed_memory
from .config import add_options, from_args

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(name: str, help: str, setup: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``fn`` as the subcommand ``name``; ``setup`` adds its flags."""

    def register(fn: Command) -> Command:
        _COMMANDS[name] = (help, setup, fn)
        return fn

    return register


def _environment() -> None:
    """Headless rendering and offline models are the only modes this library runs in by default;
    glibc keeps freed memory (:mod:`arrcoc_steer.allocator`)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    keep_freed_memory()  # forward passes over large batches reuse memory instead of page-faulting it in


# -- envs ------------------------------------------------------------------------------------
def _setup_envs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", help="only this suite (spatial, object, goal, long)")


@command("envs", "list the simulated suites and tasks", _setup_envs)
def cmd_envs(args: argparse.Namespace) -> int:
    import envs

    for suite in [args.suite] if args.suite else list(envs.SUITES):
        print(f"{suite}:")
        for name in envs.list_tasks(suite):
            spec = envs.get_task(name)
            print(f"  {spec.env_id:<44} {spec.paraphrases[0]!r} (+{len(spec.paraphrases) - 1} paraphrases)")
    return 0


# -- collect ---------------------------------------------------------------------------------
def _setup_collect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", help="task names (default: every task, or --suite's)")
    p.add_argument("--suite", help="collect every task of this suite")
    p.add_argument("--episodes", type=int, default=40, help="episodes per task (default: %(default)s)")
    p.add_argument("--out", default="data/demos", help="dataset folder (default: %(default)s); resumable")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    p.add_argument("--modifiers", choices=("random", "none"), default="random", help="behaviour modifiers per episode")
    p.add_argument("--image-size", type=int, default=128, help="camera image side in pixels")
    p.add_argument("--noise", type=float, default=0.0,
                   help="DART: correlated noise on the executed, not the recorded, translation (action units, e.g. 0.3)")
    p.add_argument("--workers", type=int, default=1, help="processes, each collecting whole tasks (default: %(default)s)")
    p.add_argument("--max-steps", type=int,
                   help="record only each episode's first N expert steps (perception data for --train-only grounding)")
    p.add_argument("--from-subgoal", type=int, default=0, metavar="K",
                   help="start recording once K subgoals are done: a multi-step task's later step (default: %(default)s)")
    p.add_argument("--takeover", metavar="CHECKPOINT",
                   help="DAgger-style: this MiniVLA checkpoint ('default': the shipped one) drives each episode until a "
                        "random step, then the expert takes over; only the expert's corrections are recorded")


@command("collect", "write scripted-expert demonstrations (safetensors, resumable)", _setup_collect)
def cmd_collect(args: argparse.Namespace) -> int:
    import envs
    from envs.dataset import collect

    tasks = args.tasks or envs.list_tasks(args.suite)
    index = collect(tasks, args.episodes, args.out, seed=args.seed, modifiers=args.modifiers, image_size=args.image_size,
                    noise=args.noise, workers=args.workers, max_steps=args.max_steps,
                    from_subgoal=args.from_subgoal, takeover=args.takeover)  # fmt: skip
    print(f"{len(index.get('episodes', []))} episodes in {args.out}")
    return 0


# -- train -----------------------------------------------------------------------------------
def _setup_train(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    add_options(p, TrainConfig)


@command("train", "behaviour-clone MiniVLA on demonstrations (resumable; GPU when present)", _setup_train)
def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    t0 = time.perf_counter()
    out = train(from_args(TrainConfig, args))
    print(f"model saved to {out} after {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


def _setup_calibrate(p: argparse.ArgumentParser) -> None:
    from .models.minivla import DECODINGS

    p.add_argument("--model", required=True, help="MiniVLA model folder (its config.json gets the threshold)")
    p.add_argument("--data", nargs="+", required=True, help="the dataset folders the model was trained on")
    p.add_argument("--decode", choices=DECODINGS,
                   help="also set the action decoding (default: keep the model's; see MiniVLA.decode_actions)")
    p.add_argument("--dry-run", action="store_true", help="print the threshold without writing anything")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")


@command("calibrate", "set MiniVLA's release threshold from its held-out demo frames (and its decoding)", _setup_calibrate)
def cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from .models.gripper import calibrate

    result = calibrate(args.model, args.data, write=not args.dry_run, device=args.device, decode=args.decode)
    print(json.dumps(result, indent=2))
    return 0


def _setup_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?",
                   help="recipe YAML: steps (arrcoc-steer command lines) and release (default: the shipped policy's)")
    p.add_argument("--root", default="runs/reproduce", help="folder the steps' relative paths live in (default: %(default)s)")
    p.add_argument("--export", help="copy the release model folder here at the end")
    p.add_argument("--until", type=int, metavar="N", help="stop after step N (e.g. collect the data now, train later)")
    p.add_argument("--dry-run", action="store_true", help="parse every step and show which are done; run nothing")


@command("reproduce", "run a training recipe (collect, train, calibrate) as one resumable command", _setup_reproduce)
def cmd_reproduce(args: argparse.Namespace) -> int:
    from .recipe import SHIPPED_RECIPE, Recipe, reproduce

    reproduce(Recipe.load(args.recipe or SHIPPED_RECIPE), args.root, args.export, args.dry_run, args.until)
    return 0


# -- atlas / concepts ------------------------------------------------------------------------
ATLAS_CACHE = "runs/cache"


def _setup_atlas(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="MiniVLA checkpoint folder (default: the shipped policy)")
    p.add_argument("--cache", default=ATLAS_CACHE, help="atlas cache folder, keyed by a hash of the weights (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=10, help="tokens kept per neuron (default: %(default)s)")
    p.add_argument("--basis", choices=("auto", "embed", "unembed"), default="auto", help="token basis to project onto")
    p.add_argument("--score", choices=("dot", "cosine"), default="dot", help="dot (the paper's) or cosine")
    p.add_argument("--search", nargs="+", metavar="WORD", help="print the neurons whose top tokens hold these words")
    p.add_argument("--limit", type=int, default=10, help="neurons printed per search (default: %(default)s)")


@command("atlas", "project every FFN value vector onto the token basis (cached); search it", _setup_atlas)
def cmd_atlas(args: argparse.Namespace) -> int:
    from .atlas import NeuronAtlas
    from .models.minivla import load_policy

    policy = load_policy(args.policy)
    atlas = NeuronAtlas.build(policy, top_k=args.top_k, basis=args.basis, score=args.score, cache=args.cache)
    fraction = atlas.action_fraction()
    print(f"atlas: {atlas.n_layers} layers x {atlas.d_ff} neurons; {fraction:.1%} read mostly as action bins")
    for word in args.search or []:
        print(f"\nneurons for {word!r}:")
        for hit in atlas.search(word, limit=args.limit):
            print("  " + atlas.describe(hit.layer, hit.neuron, k=8))
    return 0


def _setup_concepts(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="*", metavar="NAME=WORD[,WORD][/AGAINST[,AGAINST]]",
                   help="e.g. fast=fast,quick/slow slow=slow,slowly/fast up=up,upward/down; with --action, "
                        "action meanings: fast slow up down open close")  # fmt: skip
    p.add_argument("--action", action="store_true",
                   help="rank neurons by how they move the policy's actions through its head, state by state (an action "
                        "readout on scripted-expert observations), instead of by the words their value vectors point at")  # fmt: skip
    p.add_argument("--modifier", action="append", default=[], metavar="NAME=MODIFIER",
                   help="with --action: a concept found from what a prompt modifier does to the same states' actions, "
                        "e.g. --modifier up_prompt='and lift it high' (repeatable)")  # fmt: skip
    p.add_argument("--readout", help="with --action: readout file to reuse, or to write when missing "
                   "(default: next to --out)")  # fmt: skip
    p.add_argument("--policy", help="MiniVLA checkpoint folder (default: the shipped policy)")
    p.add_argument("--cache", default=ATLAS_CACHE, help="atlas cache folder (default: %(default)s)")
    p.add_argument("--top-n", type=int, help="neurons per concept (default: 10 from words, 20 with --action)")
    p.add_argument("--layers", type=int, nargs="+", help="only these layers")
    p.add_argument("--out", default="concepts.yaml", help="concept dictionary to write (default: %(default)s)")
    p.add_argument("--calibration", help="also write each neuron's activation scale here (.safetensors), "
                   "measured on scripted-expert observations, for alpha in calibrated units")  # fmt: skip


def parse_concept_spec(spec: str) -> tuple[str, list[str], list[str]]:
    """``"fast=fast,quick/slow"`` -> ``("fast", ["fast", "quick"], ["slow"])``."""
    from .errors import ConfigError

    name, sep, rest = spec.partition("=")
    words, _, against = rest.partition("/")
    keywords = [w for w in words.split(",") if w]
    if not sep or not name or not keywords:
        raise ConfigError(f"concept spec {spec!r} must look like NAME=WORD[,WORD][/AGAINST], e.g. fast=fast,quick/slow")
    return name, keywords, [w for w in against.split(",") if w]


def parse_modifier(spec: str) -> tuple[str, str]:
    """``"up_prompt=and lift it high"`` -> ``("up_prompt", "and lift it high")``."""
    from .errors import ConfigError

    name, sep, modifier = spec.partition("=")
    if not sep or not name.strip() or not modifier.strip():
        raise ConfigError(f"--modifier {spec!r} must look like NAME=MODIFIER, e.g. up_prompt='and lift it high'")
    return name.strip(), modifier.strip()


@command("concepts", "find concept neurons from keywords in the atlas; write a YAML dictionary", _setup_concepts)
def cmd_concepts(args: argparse.Namespace) -> int:
    from .atlas import NeuronAtlas
    from .errors import ConfigError
    from .models.minivla import load_policy
    from .policy_steering import write_action_concepts, write_calibration, write_concepts

    modifiers = dict(parse_modifier(m) for m in args.modifier)
    if modifiers and not args.action:
        raise ConfigError("--modifier finds concepts through the action head: add --action")
    if not args.specs and not modifiers:
        raise ConfigError("name at least one concept: a spec (e.g. fast=fast,quick/slow, or with --action a meaning "
                          "such as fast) or, with --action, a --modifier NAME=MODIFIER")  # fmt: skip
    policy = load_policy(args.policy)
    if args.action:
        from pathlib import Path

        readout = args.readout or Path(args.out).with_suffix(".readout.safetensors")
        for concept in write_action_concepts(policy, args.out, args.specs, readout=readout, top_n=args.top_n or 20,
                                             layers=args.layers, modifiers=modifiers):  # fmt: skip
            print(f"{concept.name}: {len(concept.neurons)} neurons, {concept.meaning}")
            print("  " + ", ".join(f"L{l} N{n} ({s:.2f})" for (l, n), s in zip(concept.neurons[:8], concept.scores)))
        print(f"wrote {args.out} (readout: {readout})")
    else:
        atlas = NeuronAtlas.build(policy, cache=args.cache)
        specs = {name: (words, against) for name, words, against in map(parse_concept_spec, args.specs)}
        for concept in write_concepts(policy, args.out, specs, atlas=atlas, top_n=args.top_n or 10, layers=args.layers):
            print(f"{concept.name}: {len(concept.neurons)} neurons in layers {list(concept.layers)}")
            for layer, neuron in concept.neurons[:5]:
                print("  " + atlas.describe(layer, neuron, k=6))
        print(f"wrote {args.out}")
    if args.calibration:
        print(f"wrote {write_calibration(policy, args.calibration)}")
    return 0


def _setup_direction(p: argparse.ArgumentParser) -> None:
    p.add_argument("positive", help="modifier appended to the instruction, e.g. quickly")
    p.add_argument("negative", help="the contrasting modifier, e.g. slowly")
    p.add_argument("--policy", help="MiniVLA checkpoint folder (default: the shipped policy)")
    p.add_argument("--layers", type=int, nargs="+", help="layers to take the direction at (default: all)")
    p.add_argument("--positions", choices=("all", "text", "image", "action"), default="all", help="token positions averaged")
    p.add_argument("--top-layers", type=int, metavar="K",
                   help="keep the K layers where the contrast is largest (where the modifier reaches the positions)")
    p.add_argument("--raw", action="store_true",
                   help="keep the mean difference's own norm (strength 1 = the contrast itself) instead of unit vectors")
    p.add_argument("--map", action="store_true",
                   help="fit a residual map from '<instruction> NEGATIVE' to '<instruction> POSITIVE' instead, one per "
                        "chosen position (NEGATIVE may be ''), at --layers (default: where the contrast is largest)")
    p.add_argument("--per-task", type=int, help="expert observations per task (default: 60 with --map, else 8)")
    p.add_argument("--out", default="direction.safetensors", help="file to write (default: %(default)s)")


@command("direction", "contrastive residual direction: '<instruction> POSITIVE' minus '<instruction> NEGATIVE'", _setup_direction)
def cmd_direction(args: argparse.Namespace) -> int:
    from .models.minivla import load_policy
    from .policy_steering import write_direction

    from .steering import ResidualDirection

    from .policy_steering import observations, write_map

    policy = load_policy(args.policy)
    items = observations(per_task=args.per_task or (60 if args.map else 8), every=2 if args.map else 3)
    if args.map:  # a linear map wants many pairs
        layers = args.layers
        if layers is None:
            reach = write_direction(policy, args.out, args.positive, args.negative, positions=args.positions,
                                    normalize=False, top_layers=args.top_layers or 1, items=items)  # fmt: skip
            layers = list(ResidualDirection.load(reach).layers)
        path = write_map(policy, args.out, args.positive, args.negative, layers=layers, items=items,
                         positions=args.positions, per_position=args.positions != "all")  # fmt: skip
        print(f"wrote {path} (a map at layers {layers}, {args.positions} positions)")
        return 0
    path = write_direction(policy, args.out, args.positive, args.negative, layers=args.layers, items=items,
                           positions=args.positions, normalize=not args.raw, top_layers=args.top_layers)  # fmt: skip
    norms = ", ".join(f"{l}: {float(v.norm()):.3g}" for l, v in ResidualDirection.load(path).vectors.items())
    print(f"wrote {path} (layer: norm {norms})")
    return 0


# -- eval / sweep ----------------------------------------------------------------------------
def _default_policy() -> str:
    from .models.minivla import DEFAULT_CHECKPOINT

    return str(DEFAULT_CHECKPOINT)


def _parse_condition(words: list[str]) -> dict:
    """``["budget", "budget=64", "allocator=relevance"]`` -> ``{"kind": "budget", "budget": 64, ...}``."""
    import yaml

    from .errors import ConfigError

    kind, *pairs = words
    spec = {"kind": kind}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"condition field {pair!r} must look like key=value (condition {kind!r})")
        spec[key.replace("-", "_")] = yaml.safe_load(value)
    return spec


def _setup_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="MiniVLA checkpoint folder, or 'expert' (default: the shipped policy)")
    p.add_argument("--tasks", nargs="+", default=["all"], help="task names, suite names or 'all' (default: all)")
    p.add_argument("--seeds", type=int, default=10, help="fresh seeds per task and condition (default: %(default)s)")
    p.add_argument("--seed-base", type=int, help="first seed (default: the reporting seeds, 1,000,000); "
                   "develop on other seeds, e.g. 7000000, and report on the defaults")  # fmt: skip
    p.add_argument(
        "--condition", dest="conditions", action="append", nargs="+", metavar="KIND [KEY=VALUE]",
        help="a condition, repeatable: e.g. 'unsteered', 'prompt modifier=quickly', "
        "'budget budget=64 allocator=relevance', 'concept concepts=c.yaml concept=fast alpha=4' (default: unsteered)",
    )
    p.add_argument("--conditions-file", help="YAML list of conditions (see arrcoc_steer.eval.load_conditions)")
    p.add_argument("--baseline", help="the condition every other is paired with (default: 'unsteered' when "
                   "it is one of them, else the first condition)")  # fmt: skip
    p.add_argument("--out", default="runs/eval", help="run folder; rerunning resumes it (default: %(default)s)")
    p.add_argument("--backend", choices=("local", "serial", "ray"), default="local", help="where episodes run")
    p.add_argument("--workers", type=int, help="processes or Ray actors (default: all cores)")
    p.add_argument("--address", help="Ray cluster address (backend ray)")
    p.add_argument("--video", choices=("agentview", "wrist"), help="write an mp4 of the first seed of every task and condition")
    p.add_argument("--max-steps", type=int, help="cap on episode length (default: each task's limit)")


@command("eval", "evaluate a policy under conditions in closed loop (resumable run folder)", _setup_eval)
def cmd_eval(args: argparse.Namespace) -> int:
    from .eval import as_condition, evaluate, fresh_seeds, load_conditions

    conditions = [_parse_condition(c) for c in args.conditions or [["unsteered"]]]
    args.policy = args.policy or _default_policy()
    if args.conditions_file:
        conditions += load_conditions(args.conditions_file)
    names = [as_condition(c).name for c in conditions]
    baseline = args.baseline or ("unsteered" if "unsteered" in names else names[0])
    seeds = args.seeds if args.seed_base is None else fresh_seeds(args.seeds, args.seed_base)
    results = evaluate(
        args.policy, args.tasks, conditions, seeds, args.out, backend=args.backend, workers=args.workers,
        address=args.address, frames=args.video, max_steps=args.max_steps, baseline=baseline,
    )  # fmt: skip
    print(results.format())
    print(results.format_by_suite("success"))
    print(results.format_outcomes())
    print(f"results: {args.out}/results.json, {args.out}/results.csv")
    return 0


def _setup_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML: policy, tasks, seeds, conditions, out_dir and any evaluate() argument")
    p.add_argument("--backend", choices=("local", "serial", "ray"), help="override the config's backend")
    p.add_argument("--address", help="Ray cluster address")
    p.add_argument("--workers", type=int, help="processes or Ray actors")
    p.add_argument("--policy", help="override the config's policy")
    p.add_argument("--seeds", type=int, help="override the config's seeds per task (a quick pass; rerun with more to extend it)")
    p.add_argument("--out", dest="out_dir", help="override the config's out_dir")


@command("sweep", "run a sweep described by a YAML file (conditions x tasks x seeds)", _setup_sweep)
def cmd_sweep(args: argparse.Namespace) -> int:
    import inspect

    import yaml

    from .errors import ConfigError
    from .eval import evaluate

    config = yaml.safe_load(open(args.config)) or {}
    valid = set(inspect.signature(evaluate).parameters)
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ConfigError(f"{args.config}: unknown keys {unknown}; valid keys: {sorted(valid)}")
    for key in ("backend", "address", "workers", "policy", "seeds", "out_dir"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.setdefault("policy", _default_policy())
    results = evaluate(**config)
    print(results.format())
    print(results.format_outcomes())
    return 0


# -- report ----------------------------------------------------------------------------------
def _setup_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by `arrcoc-steer eval` or `sweep`")
    p.add_argument("--out", help="HTML file to write (default: <run>/report.html)")
    p.add_argument("--title", default="arrcoc_steer run report", help="page title")
    p.add_argument("--markdown", action="store_true",
                   help="print the run's effects table as Markdown (for a README or an issue) instead")
    p.add_argument("--metrics", nargs="+", default=["speed_w", "peak_ee_z"], help="metrics of the Markdown table")
    p.add_argument("--aggregate", action="store_true",
                   help="recompute the statistics from the episodes (else read the run's results.json)")


@command("report", "write the self-contained HTML report of a run folder", _setup_report)
def cmd_report(args: argparse.Namespace) -> int:
    if args.markdown:
        from pathlib import Path

        from .eval.sweep import RunFolder, SweepResults, aggregate, load_results

        if args.aggregate or not (Path(args.run) / "results.json").is_file():
            manifest = RunFolder(args.run).read_manifest() or {}
            results = aggregate(args.run, window=manifest.get("window", "min"))
        else:  # what the last sweep call wrote
            saved = load_results(args.run)
            results = SweepResults(Path(args.run), [], saved["summary"], saved["windows"], saved["controls"])
        print(results.markdown(args.metrics))
        return 0
    from .viz.report import ReportExtras, write_report

    print(write_report(args.run, args.out, ReportExtras(title=args.title)))
    return 0


# -- demo ------------------------------------------------------------------------------------
def _setup_demo(p: argparse.ArgumentParser) -> None:
    from .demo import DemoConfig

    add_options(p, DemoConfig)
    p.add_argument("--expert", action="store_true", help="only run the scripted expert (one task per suite) and write a video")


@command("demo", "the whole loop on the shipped policy: atlas, concepts, steered episodes, budgets, report", _setup_demo)
def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.expert:
        import envs
        from envs.demo import run_expert_demo

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        success = run_expert_demo([envs.list_tasks(s)[0] for s in envs.SUITES], episodes=2, video_path=out / "expert.mp4")
        for task, rate in success.items():
            print(f"{task:<32} success {rate:.0%}")
        print(f"video: {out / 'expert.mp4'}")
        return 0
    from .demo import DemoConfig, run_demo

    t0 = time.perf_counter()
    run_demo(from_args(DemoConfig, args))
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


# -- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arrcoc-steer",
        description="Activation steering and ARR-COC relevance control for vision-language-action models, "
        "evaluated in closed-loop MuJoCo simulation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'arrcoc-steer <command> --help' for the flags of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (help_, setup, fn) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        setup(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    _environment()
    args = build_parser().parse_args(argv)
    from .errors import ArrcocError

    try:
        return args.func(args)
    except ArrcocError as e:  # user errors: one clear line, no traceback
        print(f"arrcoc-steer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
