"""MiniVLA's model card, written from measurements on disk (nothing in it is typed by hand).

    python -m arrcoc_steer.models.card --model arrcoc_steer/checkpoints/minivla \\
        --train runs/minivla runs/minivla_ft --success runs/minivla_success --modifiers runs/minivla_modifiers \\
        --latency runs/latency.json

A model refitted from a released one lists only its own stages and names the release's card, whose
stages come first (the shipped card, stage 7 on top of stages 1-6):

    git show 0a3cdda:arrcoc_steer/checkpoints/minivla/MODEL_CARD.md > parent.md  # the stage-6 card, last written there
    python -m arrcoc_steer.models.card --model arrcoc_steer/checkpoints/minivla --train runs/takeover_h1 \\
        --parent parent.md --success runs/h1_success --modifiers runs/h1_modifiers --latency runs/h1_latency.json

Sources: the training run folders, one per stage (``train_config.json``, ``train_log.jsonl``),
the sweeps of ``examples/sweeps/minivla_success.yaml`` and ``minivla_modifiers.yaml`` (their
``results.json``), ``benchmarks/bench_policy.py --json`` output, and the neuron atlases of the base
MiniLM and of the trained policy (the rewired fraction, computed here).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from ..errors import ConfigError


def rewired_fraction(model_dir: Path) -> dict:
    """Share of FFN neurons whose top-10 projected tokens are mostly action bins, before and after."""
    from ..atlas import NeuronAtlas
    from .minivla import MiniVLA, MiniVLAConfig

    trained = MiniVLA.from_pretrained(model_dir)
    base = MiniVLA(MiniVLAConfig.from_json((model_dir / "config.json").read_text()))  # pretrained rows only
    out = {}
    for name, model in (("base MiniLM", base), ("fine-tuned MiniVLA", trained)):
        atlas = NeuronAtlas.build(model, progress=False)
        out[name] = {"all": atlas.action_fraction(), "per_layer": [float(x) for x in atlas.action_fraction(per_layer=True)]}
    return out


def _success_rows(results: dict) -> list[tuple[str, dict]]:
    import envs

    rows = []
    for cond in results["summary"]:
        per_suite = {}
        for task, stats in results["summary"][cond]["tasks"].items():
            if task != "all":
                per_suite.setdefault(envs.get_task(task).suite, []).append((stats["success"]["mean"], stats["success"]["n"]))
        suites = {s: sum(m * n for m, n in v) / sum(n for _, n in v) for s, v in per_suite.items()}
        n = {s: sum(n for _, n in v) for s, v in per_suite.items()}
        rows.append((cond, {"suites": suites, "n": n, "all": results["summary"][cond]["tasks"]["all"]["success"]}))
    return rows


def success_table(results: dict) -> str:
    rows = _success_rows(results)
    suites = list(dict.fromkeys(s for _, r in rows for s in r["suites"]))
    lines = ["| condition | " + " | ".join(suites) + " | mean over suites | all episodes [95% CI] |",
             "|---" * (len(suites) + 3) + "|"]  # fmt: skip
    for cond, r in rows:
        cells = [f"{r['suites'][s]:.0%} (n={r['n'][s]})" for s in suites]
        mean = sum(r["suites"].values()) / len(r["suites"])
        a = r["all"]
        lines.append(f"| {cond} | " + " | ".join(cells) + f" | **{mean:.1%}** | {a['mean']:.1%} [{a['ci'][0]:.1%}, {a['ci'][1]:.1%}] |")
    return "\n".join(lines)


def modifier_table(results: dict) -> str:
    lines = ["| instruction | success | speed (m/s, matched window) | peak end-effector height (m) |", "|---|---|---|---|"]
    for cond, entry in results["summary"].items():
        s = entry["tasks"]["all"]
        cells = []
        for m, fmt in (("success", "{:.0%}"), ("speed_w", "{:.3f}"), ("peak_ee_z", "{:.3f}")):
            cell = fmt.format(s[m]["mean"])
            vs = s[m].get("vs_baseline")
            if vs and vs.get("pct_change") is not None:
                cell += f" ({vs['pct_change']:+.0f}%)"
            cells.append(cell)
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    speeds = {c: e["tasks"]["all"]["speed_w"]["mean"] for c, e in results["summary"].items()}
    if "prompt_quickly" in speeds and "prompt_slowly" in speeds:
        lines.append(f"\n**quickly / slowly speed ratio: {speeds['prompt_quickly'] / speeds['prompt_slowly']:.2f}x** "
                     "(same tasks and seeds; target >= 1.5x).")  # fmt: skip
    return "\n".join(lines)


def sweep_command(yaml_name: str, results: dict) -> str:
    """The command that produced ``results``: the YAML, and its seeds per task as run."""
    return f"`arrcoc-steer sweep examples/sweeps/{yaml_name} --seeds {len(results['manifest']['seeds'])}`"


STAGE_FLAGS_SKIPPED = ("data", "out", "init", "device", "resume", "checkpoint_every", "log_every")


def collect_command(dataset: Path) -> str:
    """The ``arrcoc-steer collect`` call that wrote ``dataset`` (from its index.json)."""
    import envs

    index = json.loads((dataset / "index.json").read_text()) if (dataset / "index.json").is_file() else {}
    cfg, eps = index.get("config", {}), index.get("episodes", [])
    tasks = sorted({e["task"] for e in eps})
    per_task = max((sum(e["task"] == t for e in eps) for t in tasks), default="?")
    flags = f" --tasks {' '.join(tasks)}" if tasks and len(tasks) < len(envs.list_tasks()) else ""
    flags += f" --seed {cfg['seed']}" if cfg.get("seed") else ""
    flags += f" --noise {cfg['noise']}" if cfg.get("noise") else ""
    flags += f" --max-steps {cfg['max_steps']}" if cfg.get("max_steps") else ""
    flags += f" --from-subgoal {cfg['from_subgoal']}" if cfg.get("from_subgoal") else ""
    flags += f" --takeover {cfg['takeover']}" if cfg.get("takeover") else ""
    return f"`arrcoc-steer collect --episodes {per_task}{flags} --out data/{dataset.name}` ({len(eps)} episodes)"


# What a stage's last log record reports, when it has it (a grounding-only stage has no action loss).
STAGE_METRICS = (
    ("action_loss", "action loss", ".3f"),
    ("val_action_loss", "held-out action loss", ".3f"),
    ("val_l1_xyz", "held-out |error| xyz", ".4f"),
    ("val_l1_grip", "gripper", ".4f"),
    ("val_grounding_loss", "held-out grounding loss", ".3f"),
    ("val_pointer_l1", "held-out pointer L1", ".4f"),
)


def stage_command(cfg: dict, run: Path, previous: Path | None) -> str:
    """The ``arrcoc-steer train`` call of one stage: its data, its parent model, its non-default flags."""
    from ..train import TrainConfig

    def flag(key: str, value) -> str:
        name = key.replace("_", "-")
        if isinstance(value, bool):  # argparse's BooleanOptionalAction: --x / --no-x
            return f"--{name}" if value else f"--no-{name}"
        return f"--{name} {value}"

    defaults = TrainConfig()
    flags = " ".join(flag(k, v) for k, v in cfg.items() if k not in STAGE_FLAGS_SKIPPED and v != getattr(defaults, k, None))
    data = " ".join(f"data/{Path(d).name}" for d in cfg["data"])
    init = f" --init runs/{previous.name}/model" if previous is not None else ""
    return f"`arrcoc-steer train --data {data}{init} {flags} --out runs/{run.name}`"


class ParentCard:
    """What a model's card says of the stages before it: its data commands, numbered stages and note.

    A model fine-tuned from a released one (``write_model_card(parent=...)``) keeps them, so its card
    lists the whole recipe even when the earlier stages' run folders are gone."""

    def __init__(self, text: str):
        section = {m.group(1): m.group(2) for m in re.finditer(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.M | re.S)}
        self.data = re.findall(r"`arrcoc-steer collect [^`]*` \(\d+ episodes\)", section.get("Data", ""))
        self.stages = re.findall(r"^\d+\. (`arrcoc-steer train [^`]*`.*)$", section.get("Training", ""), re.M)
        self.notes = re.findall(r"^Note: (.*)$", section.get("Training", ""), re.M)
        out = re.search(r"--out (\S+)`", self.stages[-1]) if self.stages else None
        if out is None:
            raise ConfigError("the parent card lists no training stage ending in --out ('1. `arrcoc-steer train ... "
                              "--out runs/NAME`' lines under '## Training')")  # fmt: skip
        self.last_run = Path(out.group(1))

    def names(self, dataset: Path) -> bool:
        return f"--out data/{dataset.name}`" in " ".join(self.data)


def write_model_card(model: Path, train: list[Path], success: Path | None = None, modifiers: Path | None = None,
                     latency: Path | None = None, rewired: bool = True, note: str | None = None,
                     parent: Path | None = None) -> Path:  # fmt: skip
    """Write ``model/MODEL_CARD.md``. ``train``: the run folders of the stages that made the model, in
    order (a fresh run, then each fine-tuning run that started from the previous one's model).
    ``parent``: the card (MODEL_CARD.md) of the model the first of them started from, whose data, stages
    and note come first; its training curve stays in ``train_curve.png`` and the new stages' go to
    ``train_curve_refit.png``."""
    from ..train import plot_training_curve

    earlier = ParentCard(Path(parent).read_text()) if parent else None
    train = [Path(t) for t in train]
    configs = [json.loads((t / "train_config.json").read_text()) for t in train]
    logs = [[json.loads(line) for line in (t / "train_log.jsonl").read_text().splitlines()] for t in train]
    curve = "train_curve_refit.png" if earlier else "train_curve.png"
    plot_training_curve([t / "train_log.jsonl" for t in train], model / curve)
    parent_curve = Path(parent).parent / "train_curve.png" if earlier else None
    if parent_curve and parent_curve.is_file() and parent_curve.resolve() != (model / "train_curve.png").resolve():
        shutil.copyfile(parent_curve, model / "train_curve.png")
    config = json.loads((model / "config.json").read_text())
    extra = config.get("extra", {})
    datasets = [d for d in dict.fromkeys(Path(d) for c in configs for d in c["data"]) if not (earlier and earlier.names(d))]
    decode_flag = f" --decode {config['decode']}" if config.get("decode", "argmax") != "argmax" else ""
    stages = [f"{i + 1}. {line}" for i, line in enumerate(earlier.stages)] if earlier else []
    for i, (t, cfg, log) in enumerate(zip(train, configs, logs)):
        last = log[-1]
        minutes = (last["step"] * cfg["batch_size"] / last["samples_per_s"] + last.get("head_cache_s", 0)) / 60
        measured = [f"{label} {last[key]:{fmt}}" for key, label, fmt in STAGE_METRICS if key in last]
        previous = train[i - 1] if i else (earlier.last_run if earlier else None)
        stages.append(
            f"{len(stages) + 1}. {stage_command(cfg, t, previous)}: step {last['step']}, "
            f"{', '.join(measured)}; {last['samples_per_s']:.1f} samples/s, about {minutes:.0f} min on the machine that trained it."
        )  # fmt: skip
    notes = (earlier.notes if earlier else []) + ([note] if note else [])
    parts = [
        "# MiniVLA — model card",
        "The default policy of arrcoc_steer: the pretrained all-MiniLM-L6-v2 backbone (frozen; LoRA on attention "
        "and the FFN input side), a CNN region encoder giving 64–400 visual tokens per step, and 7 action tokens on "
        "`[unused0]`..`[unused255]` read through a head tied to the word embeddings.",
        "## Data",
        "Scripted-expert demonstrations of the 15 tasks of `envs`, random behaviour modifiers (speed, height, care) "
        "in the instructions, segmentation-derived grounding labels: "
        + "; ".join((earlier.data if earlier else []) + [collect_command(d) for d in datasets])
        + f". The last stage trained on {extra.get('episodes', '?')} episodes, {extra.get('frames', '?')} frames. "
        "`--noise` runs (DART) execute the expert's translation plus correlated noise and record its clean action; "
        "`--max-steps` runs record only each episode's first steps (perception data for the grounding).",
        "## Training",
        "\n".join(stages),
        "All other flags at their defaults; each run folder's `train_config.json` has every value. The whole "
        "recipe, data included, is one resumable command: `arrcoc-steer reproduce` runs `recipe.yaml` (beside this "
        "card) step by step and logs each step's minutes.",
        *([f"Then the release decision: `arrcoc-steer calibrate --model <model>{decode_flag} --data "
           f"{' '.join(f'data/{Path(d).name}' for d in configs[-1]['data'])}` wrote `release_threshold: {config['release_threshold']}` "
           "(the P(open) at which a hand with closed fingers opens; best balanced accuracy on the held-out frames)."]
          if config.get("release_threshold") is not None else []),
        *[f"Note: {n}" for n in notes],
        "![training curve](train_curve.png)",
        *(["![training curve of the refit stages](train_curve_refit.png)"] if earlier else []),
    ]
    if success:
        results = json.loads((success / "results.json").read_text())
        parts += ["## Success (closed loop, fresh seeds)", success_table(results),
                  f"Command: {sweep_command('minivla_success.yaml', results)}."]  # fmt: skip
    if modifiers:
        results = json.loads((modifiers / "results.json").read_text())
        parts += ["## Behaviour modifiers", modifier_table(results),
                  f"Command: {sweep_command('minivla_modifiers.yaml', results)}."]  # fmt: skip
    if latency:
        lat = json.loads(latency.read_text())
        parts += ["## Latency (batch 1, CPU)", "\n".join(f"- {k}: {v}" for k, v in lat.items()),
                  "Command: `python benchmarks/bench_policy.py --json <file>`."]  # fmt: skip
    if rewired:
        r = rewired_fraction(model)
        lines = [f"- {name}: {v['all']:.1%} of neurons (per layer: {', '.join(f'{x:.1%}' for x in v['per_layer'])})"
                 for name, v in r.items()]  # fmt: skip
        parts += ["## Rewired neurons",
                  "Share of FFN neurons whose top-10 tokens (value vector projected onto the word embeddings) are "
                  "mostly action bins (the reference finding on OpenVLA: under 25% rewired):", "\n".join(lines)]  # fmt: skip
    out = model / "MODEL_CARD.md"
    out.write_text("\n\n".join(parts) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--train", type=Path, nargs="+", required=True,
                   help="run folders of the training stages, in order (fresh run first, then fine-tunes)")
    p.add_argument("--success", type=Path)
    p.add_argument("--modifiers", type=Path)
    p.add_argument("--latency", type=Path)
    p.add_argument("--no-rewired", dest="rewired", action="store_false")
    p.add_argument("--note", help="provenance the run folder cannot show (e.g. a run resumed with other flags)")
    p.add_argument("--parent", type=Path, help="the MODEL_CARD.md of the model the first --train stage started from "
                   "(its data, stages and notes come first)")  # fmt: skip
    args = p.parse_args(argv)
    print(write_model_card(args.model, args.train, args.success, args.modifiers, args.latency, args.rewired, args.note,
                           args.parent))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
