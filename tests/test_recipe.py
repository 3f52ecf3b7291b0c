"""Training recipes: the shipped one is the model card's commands, a small one runs end to end and resumes."""

import json
import re
from pathlib import Path

import pytest

from arrcoc_steer.cli import main
from arrcoc_steer.config import from_args
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, MiniVLA
from arrcoc_steer.recipe import LOG_NAME, SHIPPED_RECIPE, Recipe, RecipeError, parse_step, read_log, reproduce
from arrcoc_steer.train import TrainConfig

SMALL_STEPS = [
    "collect --tasks PutRedBlockInTray --episodes 4 --out data/demos",
    "train --data data/demos --steps 2 --batch-size 4 --warmup 1 --checkpoint-every 1 --log-every 1 --holdout-frac 0.5 --out runs/bc",
    "calibrate --model runs/bc/model --decode mean --data data/demos",
]


def write_recipe(path: Path, steps: list[str], release: str = "runs/bc/model") -> Path:
    path.write_text(json.dumps({"name": "small", "steps": steps, "release": release}))  # JSON is YAML
    return path


def test_the_shipped_recipe_is_the_model_cards_commands():
    """Every train and collect step of the recipe parses to the same settings as the card's command.

    The card lists every collect (its data) before every train (its stages); the recipe interleaves
    them where a stage's data needs an earlier model (on-policy takeover data), so each kind is compared
    in its own order."""
    recipe = Recipe.load(SHIPPED_RECIPE)
    card = (DEFAULT_CHECKPOINT / "MODEL_CARD.md").read_text()
    card_commands = [c for kind in ("collect", "train") for c in re.findall(rf"`arrcoc-steer ({kind} [^`]*)`", card)]
    steps = [s for kind in ("collect", "train") for s in recipe.steps if s.split()[0] == kind]
    assert len(card_commands) == len(steps) == 14

    def settings(line: str) -> dict:
        args = parse_step(line)
        if args.command == "train":
            return vars(from_args(TrainConfig, args))
        return {k: v for k, v in vars(args).items() if k not in ("func", "workers")}  # workers: same files either way

    for step, card_command in zip(steps, card_commands):
        assert settings(step) == settings(card_command), step
    shipped = MiniVLA.from_pretrained(DEFAULT_CHECKPOINT).config
    calibrate = parse_step(recipe.steps[-1])
    assert calibrate.command == "calibrate" and calibrate.decode == shipped.decode
    assert recipe.release == f"{Path(calibrate.model)}" == f"{Path(parse_step(steps[-1]).out)}/model"


def _reads_and_writes(step: str) -> tuple[list[str], list[str]]:
    """The folders a recipe step reads and the one it writes (a train step writes ``out/model``)."""
    args = parse_step(step)
    if args.command == "collect":
        return [args.takeover] if args.takeover not in (None, "default") else [], [args.out]
    if args.command == "train":
        return [*args.data, *([args.init] if args.init else [])], [f"{args.out}/model"]
    if args.command == "calibrate":
        return [args.model, *args.data], []
    return [], []


@pytest.mark.parametrize(
    "path", [SHIPPED_RECIPE, *sorted((Path(__file__).parents[1] / "examples" / "recipes").glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_every_recipe_step_reads_only_what_an_earlier_step_wrote(path):
    """Each shipped recipe runs from an empty root: no step reads a folder, or a model, before a step makes it."""
    recipe = Recipe.load(path)
    written: set[Path] = set()
    for step in recipe.steps:
        reads, writes = _reads_and_writes(step)
        missing = [r for r in reads if Path(r) not in written]
        assert not missing, f"{path.name}: step {step!r} reads {missing} before any step writes them"
        written |= {Path(w) for w in writes}
    assert Path(recipe.release) in written


def test_a_recipe_runs_end_to_end_and_a_rerun_skips_what_finished(tmp_path, capsys):
    recipe = Recipe.load(write_recipe(tmp_path / "small.yaml", SMALL_STEPS))
    root, export = tmp_path / "root", tmp_path / "export"
    assert [s["command"] for s in reproduce(recipe, root, until=1)] == SMALL_STEPS[:1]  # the data only
    assert not (root / "runs").exists()
    log = reproduce(recipe, root, export=export)
    assert [s["command"] for s in log] == SMALL_STEPS and all(s["minutes"] > 0 for s in log)
    assert json.loads((root / LOG_NAME).read_text())["steps"] == log
    model = MiniVLA.from_pretrained(export)  # the release, copied
    assert model.config.decode == "mean" and model.config.release_threshold is not None
    assert len(list((root / "data" / "demos").rglob("*.safetensors"))) >= 4  # paths resolved under root

    weights = root / "runs" / "bc" / "model" / "model.safetensors"
    trained_at = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert reproduce(recipe, root) == log  # nothing left to run
    assert weights.stat().st_mtime_ns == trained_at
    assert "== step" not in capsys.readouterr().out

    # an edited step runs again (and so would every step after it); the steps before it do not
    edited = Recipe.load(write_recipe(tmp_path / "edited.yaml", [*SMALL_STEPS[:2], SMALL_STEPS[2].replace("mean", "local_mean")]))
    log = reproduce(edited, root)
    assert [s["command"] for s in log] == list(edited.steps) and weights.stat().st_mtime_ns == trained_at
    assert MiniVLA.from_pretrained(root / "runs" / "bc" / "model").config.decode == "local_mean"


def test_a_bad_step_fails_before_any_step_runs(tmp_path):
    root = tmp_path / "root"
    bad = write_recipe(tmp_path / "bad.yaml", [SMALL_STEPS[0], "train --stepz 3 --out runs/bc"])
    with pytest.raises(RecipeError, match=r"train --stepz 3.*unrecognized arguments: --stepz"):
        reproduce(Recipe.load(bad), root)
    assert not root.exists()  # the collect step before it did not run
    with pytest.raises(RecipeError, match=r"until must name a step, 1\.\.2"):
        reproduce(Recipe.load(bad), root, until=3)
    with pytest.raises(RecipeError, match="other than reproduce"):
        parse_step("reproduce other.yaml")
    with pytest.raises(RecipeError, match="invalid choice"):
        parse_step("calibrate --model m --data d --decode median")


def test_malformed_recipes_name_what_is_wrong(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file"):
        Recipe.load(tmp_path / "missing.yaml")
    cases = {
        "steps: []\nrelease: m": "non-empty list 'steps'",
        "steps: [3]\nrelease: m": "one arrcoc-steer command line",
        "steps: [envs]": "'release' must name",
        "steps: [envs]\nrelease: m\nseed: 1": "unknown keys",
    }
    for text, message in cases.items():
        (tmp_path / "r.yaml").write_text(text)
        with pytest.raises(RecipeError, match=message):
            Recipe.load(tmp_path / "r.yaml")


def test_a_failing_step_is_named_and_the_steps_before_it_stay_done(tmp_path):
    steps = ["envs --suite long", "train --data data/none --steps 1 --out runs/bc"]
    recipe = Recipe.load(write_recipe(tmp_path / "r.yaml", steps))
    with pytest.raises(RecipeError, match=re.escape("step 2 ('train --data data/none --steps 1 --out runs/bc') failed: no episode files")):
        reproduce(recipe, tmp_path / "root")
    assert [s["command"] for s in read_log(tmp_path / "root")] == steps[:1]


def test_a_step_keeps_its_quoted_arguments_as_written(tmp_path):
    step = "concepts --action --modifier up_prompt='and  lift it high'"
    recipe = Recipe.load(write_recipe(tmp_path / "r.yaml", [f"  {step} "]))
    assert recipe.steps == (step,) and parse_step(recipe.steps[0]).modifier == ["up_prompt=and  lift it high"]


def test_a_recipe_whose_release_holds_no_model_is_an_error(tmp_path):
    recipe = Recipe.load(write_recipe(tmp_path / "r.yaml", ["envs --suite long"], release="runs/nothing"))
    with pytest.raises(RecipeError, match="holds no model"):
        reproduce(recipe, tmp_path / "root")


def test_reproduce_command_line_dry_run_lists_the_shipped_recipe(tmp_path, capsys):
    assert main(["reproduce", "--dry-run", "--root", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    assert out.count("(to run)") == len(Recipe.load(SHIPPED_RECIPE).steps) == 16
    assert not (tmp_path / "root").exists()
    assert main(["reproduce", str(tmp_path / "missing.yaml")]) == 2  # a clear one-line error, no traceback
    assert "no recipe file" in capsys.readouterr().err
