"""The ``arrcoc-steer`` command: one subcommand per verb, each a thin layer over a library function.

    arrcoc-steer envs                      list suites and tasks
    arrcoc-steer collect --episodes 40     scripted-expert demos -> data/demos
    arrcoc-steer train --data data/demos   behaviour-clone MiniVLA
    arrcoc-steer eval --tasks goal         closed-loop evaluation under conditions
    arrcoc-steer sweep sweep.yaml          the same, from a YAML file
    arrcoc-steer demo                      the whole loop on the shipped policy

Run ``arrcoc-steer <verb> --help`` for every flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

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
    """Headless rendering and offline models are the only modes this library runs in by default."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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


@command("collect", "write scripted-expert demonstrations (safetensors, resumable)", _setup_collect)
def cmd_collect(args: argparse.Namespace) -> int:
    import envs
    from envs.dataset import collect

    tasks = args.tasks or envs.list_tasks(args.suite)
    index = collect(tasks, args.episodes, args.out, seed=args.seed, modifiers=args.modifiers, image_size=args.image_size)
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


# -- eval / sweep ----------------------------------------------------------------------------
DEFAULT_POLICY = "checkpoints/minivla"


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
    p.add_argument("--policy", default=DEFAULT_POLICY, help="MiniVLA checkpoint folder, or 'expert' (default: %(default)s)")
    p.add_argument("--tasks", nargs="+", default=["all"], help="task names, suite names or 'all' (default: all)")
    p.add_argument("--seeds", type=int, default=10, help="fresh seeds per task and condition (default: %(default)s)")
    p.add_argument(
        "--condition", dest="conditions", action="append", nargs="+", metavar="KIND [KEY=VALUE]",
        help="a condition, repeatable: e.g. 'unsteered', 'prompt modifier=quickly', "
        "'budget budget=64 allocator=relevance', 'concept concepts=c.yaml concept=fast alpha=4' (default: unsteered)",
    )
    p.add_argument("--conditions-file", help="YAML list of conditions (see arrcoc_steer.eval.load_conditions)")
    p.add_argument("--out", default="runs/eval", help="run folder; rerunning resumes it (default: %(default)s)")
    p.add_argument("--backend", choices=("local", "serial", "ray"), default="local", help="where episodes run")
    p.add_argument("--workers", type=int, help="processes or Ray actors (default: all cores)")
    p.add_argument("--address", help="Ray cluster address (backend ray)")
    p.add_argument("--video", choices=("agentview", "wrist"), help="write an mp4 of the first seed of every task and condition")
    p.add_argument("--max-steps", type=int, help="cap on episode length (default: each task's limit)")


@command("eval", "evaluate a policy under conditions in closed loop (resumable run folder)", _setup_eval)
def cmd_eval(args: argparse.Namespace) -> int:
    from .eval import evaluate, load_conditions

    conditions = [_parse_condition(c) for c in args.conditions or [["unsteered"]]]
    if args.conditions_file:
        conditions += load_conditions(args.conditions_file)
    results = evaluate(
        args.policy, args.tasks, conditions, args.seeds, args.out, backend=args.backend, workers=args.workers,
        address=args.address, frames=args.video, max_steps=args.max_steps,
    )  # fmt: skip
    print(results.format())
    print(f"results: {args.out}/results.json, {args.out}/results.csv")
    return 0


def _setup_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML: policy, tasks, seeds, conditions, out_dir and any evaluate() argument")
    p.add_argument("--backend", choices=("local", "serial", "ray"), help="override the config's backend")
    p.add_argument("--address", help="Ray cluster address")
    p.add_argument("--workers", type=int, help="processes or Ray actors")


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
    for key in ("backend", "address", "workers"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.setdefault("policy", DEFAULT_POLICY)
    results = evaluate(**config)
    print(results.format())
    return 0


# -- demo ------------------------------------------------------------------------------------
def _setup_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run folder for the summary and video (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=2, help="episodes per task (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1000, help="first episode seed (default: %(default)s)")


@command("demo", "run the scripted expert on one task per suite; print success, write a video", _setup_demo)
def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    import envs
    from envs.demo import run_expert_demo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [envs.list_tasks(s)[0] for s in envs.SUITES]
    video = out / "expert.mp4"
    success = run_expert_demo(tasks, episodes=args.episodes, video_path=video, seed=args.seed)
    for task, rate in success.items():
        print(f"{task:<32} success {rate:.0%}")
    print(f"video: {video}")
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
