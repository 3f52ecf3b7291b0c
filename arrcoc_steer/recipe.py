"""A recipe: the ordered ``arrcoc-steer`` commands a checkpoint came from, run as one command.

    arrcoc-steer reproduce arrcoc_steer/checkpoints/minivla/recipe.yaml --root work/minivla

A recipe is a YAML file with a list of ``steps``, each an ``arrcoc-steer`` command line exactly as a
person would type it (``collect ...``, ``train ...``, ``calibrate ...``), and the ``release``: the model
folder the last step leaves. Every step is parsed before the first one runs, so a typo in step 9 fails
in a second, not after an hour of training. Paths in the steps are relative to ``--root``.

Resumable: each finished step is appended to ``<root>/recipe_log.json`` with its command and minutes,
and a rerun skips the finished prefix of the recipe. A step that was interrupted runs again and resumes
itself (collect and train continue where they stopped). A step whose command was edited since it ran
runs again, and so does every step after it (they read its output). The log's minutes are what the
recipe cost on this machine: the measured answer to "how long does reproducing the checkpoint take".
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .errors import ArrcocError, ConfigError

LOG_NAME = "recipe_log.json"
SHIPPED_RECIPE = Path(__file__).parent / "checkpoints" / "minivla" / "recipe.yaml"  # how the default policy was made
NOT_IN_RECIPES = ("reproduce", "demo")  # a recipe does not run recipes, nor the demo (it is no training step)


class RecipeError(ConfigError):
    """A recipe file or one of its steps is invalid, or a step failed; the message names the step."""


@dataclass(frozen=True)
class Recipe:
    """The steps (``arrcoc-steer`` command lines) and the model folder they end in."""

    name: str
    steps: tuple[str, ...]
    release: str

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"no recipe file at {str(path)!r}")
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list) or not raw["steps"]:
            raise RecipeError(f"{path}: a recipe is a mapping with a non-empty list 'steps' of command lines")
        if not all(isinstance(s, str) and s.strip() for s in raw["steps"]):
            raise RecipeError(f"{path}: every step must be one arrcoc-steer command line (a non-empty string)")
        if not isinstance(raw.get("release"), str):
            raise RecipeError(f"{path}: 'release' must name the model folder the last step leaves, e.g. runs/final/model")
        unknown = set(raw) - {"name", "steps", "release"}
        if unknown:
            raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; a recipe has name, steps and release")
        return cls(str(raw.get("name", path.stem)), tuple(s.strip() for s in raw["steps"]), raw["release"])


def parse_step(step: str):
    """The parsed arguments of one step, through the same parser as the command line."""
    from .cli import build_parser

    words = shlex.split(step)
    if words and words[0] == "arrcoc-steer":
        words = words[1:]
    if not words or words[0] in NOT_IN_RECIPES:
        raise RecipeError(f"step {step!r}: a step is an arrcoc-steer command other than {' or '.join(NOT_IN_RECIPES)}")
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            return build_parser().parse_args(words)
    except SystemExit:  # argparse's way of refusing; keep its message, name the step
        reason = message.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]
        raise RecipeError(f"step {step!r} is not a valid command line: {reason}") from None


def read_log(root: Path) -> list[dict]:
    """The finished steps recorded under ``root`` (command, minutes, finished), in order."""
    path = root / LOG_NAME
    return json.loads(path.read_text())["steps"] if path.is_file() else []


def finished_prefix(recipe: Recipe, log: list[dict]) -> int:
    """How many of the recipe's first steps ran, unedited, in order: those a rerun skips."""
    n = 0
    while n < min(len(recipe.steps), len(log)) and log[n]["command"] == recipe.steps[n]:
        n += 1
    return n


@contextlib.contextmanager
def _working_directory(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def reproduce(recipe: Recipe, root: str | Path, export: str | Path | None = None, dry_run: bool = False,
              until: int | None = None) -> list[dict]:  # fmt: skip
    """Run the recipe's unfinished steps under ``root``; returns the log (every step's minutes).

    ``export``: copy the release model folder there at the end (e.g. the shipped checkpoint's folder).
    ``dry_run``: parse every step and print the plan, run nothing. ``until``: stop after this step
    (1-based; e.g. only the data now, the training later).
    """
    root = Path(root).resolve()
    if until is not None and not 1 <= until <= len(recipe.steps):
        raise RecipeError(f"until must name a step, 1..{len(recipe.steps)}; got {until}")
    parsed = [parse_step(s) for s in recipe.steps]  # all of them first: a bad step costs nothing
    log = read_log(root)
    done = finished_prefix(recipe, log)
    log = log[:done]
    for i, step in enumerate(recipe.steps):
        state = f"done, {log[i]['minutes']:.1f} min" if i < done else "to run"
        print(f"[{i + 1}/{len(recipe.steps)}] {step}  ({state})")
    if dry_run:
        return log
    root.mkdir(parents=True, exist_ok=True)
    last = len(recipe.steps) if until is None else until
    for i in range(done, last):
        print(f"\n== step {i + 1}/{len(recipe.steps)}: arrcoc-steer {recipe.steps[i]}", flush=True)
        t0 = time.perf_counter()
        try:
            with _working_directory(root):
                rc = parsed[i].func(parsed[i])
        except ArrcocError as e:  # name the step; the outputs of the steps before it stay
            raise RecipeError(f"step {i + 1} ({recipe.steps[i]!r}) failed: {e}; fix it and rerun to resume") from e
        if rc:
            raise RecipeError(f"step {i + 1} ({recipe.steps[i]!r}) exited with status {rc}; fix it and rerun to resume")
        log.append({"command": recipe.steps[i], "minutes": (time.perf_counter() - t0) / 60,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})  # fmt: skip
        record = {"recipe": recipe.name, "cpus": os.cpu_count(), "steps": log}  # minutes are this machine's
        (root / LOG_NAME).write_text(json.dumps(record, indent=2))
    if last < len(recipe.steps):
        print(f"\nstopped after step {last} of {len(recipe.steps)}; rerun without --until to go on")
        return log
    release = root / recipe.release
    if not (release / "config.json").is_file():
        raise RecipeError(f"the recipe finished but its release {str(release)!r} holds no model (config.json)")
    total = sum(s["minutes"] for s in log)
    print(f"\n{recipe.name}: {len(log)} steps, {total:.1f} min in all; release: {release}")
    if export is not None:
        export = Path(export)
        export.mkdir(parents=True, exist_ok=True)
        for f in release.iterdir():
            if f.is_file():
                shutil.copy2(f, export / f.name)
        print(f"copied the release to {export}")
    return log
