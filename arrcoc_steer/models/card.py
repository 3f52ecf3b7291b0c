"""MiniVLA's model card, written from measurements on disk (nothing in it is typed by hand).

    python -m arrcoc_steer.models.card --model arrcoc_steer/checkpoints/minivla \\
        --train runs/minivla --success runs/minivla_success --modifiers runs/minivla_modifiers \\
        --latency runs/latency.json

Sources: the training run folder (``train_config.json``, ``train_log.jsonl``, ``train_curve.png``),
the sweeps of ``examples/sweeps/minivla_success.yaml`` and ``minivla_modifiers.yaml`` (their
``results.json``), ``benchmarks/bench_policy.py --json`` output, and the neuron atlases of the base
MiniLM and of the trained policy (the rewired fraction, computed here).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


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


def write_model_card(model: Path, train: Path, success: Path | None = None, modifiers: Path | None = None,
                     latency: Path | None = None, rewired: bool = True, note: str | None = None) -> Path:  # fmt: skip
    cfg = json.loads((train / "train_config.json").read_text())
    log = [json.loads(line) for line in (train / "train_log.jsonl").read_text().splitlines()]
    last = log[-1]
    shutil.copy(train / "train_curve.png", model / "train_curve.png")
    extra = json.loads((model / "config.json").read_text()).get("extra", {})
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in cfg.items() if k in ("steps", "batch_size", "lr", "seed"))  # fmt: skip
    parts = [
        "# MiniVLA — model card",
        "The default policy of arrcoc_steer: the pretrained all-MiniLM-L6-v2 backbone (frozen; LoRA on attention "
        "and the FFN input side), a CNN region encoder giving 64–400 visual tokens per step, and 7 action tokens on "
        "`[unused0]`..`[unused255]` read through a head tied to the word embeddings.",
        "## Data",
        f"Scripted-expert demonstrations of the 15 tasks of `envs` (`arrcoc-steer collect --episodes 50`): "
        f"{extra.get('episodes', '?')} episodes, {extra.get('frames', '?')} frames, random behaviour modifiers "
        "(speed, height, care) in the instructions, segmentation-derived grounding labels.",
        "## Training",
        f"`arrcoc-steer train --data data/demos {flags}` (all other flags at their defaults; "
        f"`train_config.json` in the run folder has every value). Final record: step {last['step']}, action loss "
        f"{last['action_loss']:.3f}, held-out action loss {last.get('val_action_loss', float('nan')):.3f}, held-out "
        f"|error| xyz {last.get('val_l1_xyz', float('nan')):.4f} / gripper {last.get('val_l1_grip', float('nan')):.4f}, "
        f"{last['samples_per_s']:.1f} samples/s on the machine that trained it.",
        *([f"Note: {note}"] if note else []),
        "![training curve](train_curve.png)",
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
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--success", type=Path)
    p.add_argument("--modifiers", type=Path)
    p.add_argument("--latency", type=Path)
    p.add_argument("--no-rewired", dest="rewired", action="store_false")
    p.add_argument("--note", help="provenance the run folder cannot show (e.g. a run resumed with other flags)")
    args = p.parse_args(argv)
    print(write_model_card(args.model, args.train, args.success, args.modifiers, args.latency, args.rewired, args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
