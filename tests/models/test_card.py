import json

import pytest

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.eval import evaluate
from arrcoc_steer.models.card import modifier_table, success_table, sweep_command


def test_card_tables_are_computed_from_a_sweep(tmp_path):
    evaluate("expert", ["LiftRedBlock", "PickRedBlockIntoTray"], ["unsteered", {"kind": "prompt", "modifier": "quickly"},
             {"kind": "prompt", "modifier": "slowly"}], seeds=2, out_dir=tmp_path, backend="serial", progress=False)  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    table = success_table(results)
    assert "| unsteered | goal | object |" not in table  # suites are columns, conditions rows
    assert "100% (n=2)" in table and "**100.0%**" in table
    mods = modifier_table(results)
    ratio = float(mods.split("speed ratio: ")[1].split("x")[0])
    speeds = {c: results["summary"][c]["tasks"]["all"]["speed_w"]["mean"] for c in ("prompt_quickly", "prompt_slowly")}
    assert abs(ratio - speeds["prompt_quickly"] / speeds["prompt_slowly"]) < 0.01
    assert ratio > 1.5  # the scripted expert obeys the modifiers
    assert sweep_command("minivla_success.yaml", results).endswith("minivla_success.yaml --seeds 2`")  # as run


def test_card_describes_each_training_stage_and_its_data(tmp_path):
    from arrcoc_steer.models.card import write_model_card

    def run(name, data, **cfg):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "train_config.json").write_text(json.dumps({"data": data, "out": str(folder), "batch_size": 64, **cfg}))
        recs = [{"step": s, "loss": 3.0 - s / 1000, "l1_xyz": 0.1, "l1_grip": 0.01, "action_loss": 2.5,
                 "samples_per_s": 16.0} for s in (50, 100)]  # fmt: skip
        (folder / "train_log.jsonl").write_text("\n".join(map(json.dumps, recs)))
        return folder

    import envs

    for name, noise, tasks, extra in (("demos", 0.0, envs.list_tasks(), {}),
                                      ("demos_dart", 0.2, ["LiftRedBlock", "PutRedBlockInTray"], {"max_steps": 6})):  # fmt: skip
        (tmp_path / name).mkdir()
        eps = [{"task": t, "length": 9} for t in tasks for _ in range(3)]
        config = {"seed": int(noise > 0), "noise": noise, **extra}
        (tmp_path / name / "index.json").write_text(json.dumps({"config": config, "episodes": eps}))
    base = run("minivla", [str(tmp_path / "demos")], steps=100, lr=0.0008)
    tuned = run("minivla_ft", [str(tmp_path / "demos"), str(tmp_path / "demos_dart")], steps=100, lr=0.0004,
                init=str(base / "model"))  # fmt: skip
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"extra": {"episodes": 12, "frames": 108}, "release_threshold": 0.09,
                                                 "decode": "mean"}))
    card = write_model_card(model, [base, tuned], rewired=False).read_text()
    assert "`arrcoc-steer collect --episodes 3 --out data/demos` (45 episodes)" in card  # every task: no --tasks
    assert ("`arrcoc-steer collect --episodes 3 --tasks LiftRedBlock PutRedBlockInTray --seed 1 --noise 0.2 "
            "--max-steps 6 --out data/demos_dart` (6 episodes)") in card  # fmt: skip
    assert "1. `arrcoc-steer train --data data/demos --steps 100 --out runs/minivla`" in card  # lr is the default
    assert "2. `arrcoc-steer train --data data/demos data/demos_dart --init runs/minivla/model --steps 100 --lr 0.0004" in card
    assert "about 7 min" in card  # 100 steps x 64 frames at 16 frames/s
    assert ("`arrcoc-steer calibrate --model <model> --decode mean --data data/demos data/demos_dart` wrote "
            "`release_threshold: 0.09`") in card  # fmt: skip
    assert "`arrcoc-steer reproduce`" in card
    assert (model / "train_curve.png").stat().st_size > 1000


def test_a_refit_models_card_keeps_its_parents_stages_and_data(tmp_path):
    from arrcoc_steer.models.card import write_model_card

    parent = tmp_path / "release"
    parent.mkdir()
    (parent / "train_curve.png").write_bytes(b"\x89PNG parent curve")
    (parent / "MODEL_CARD.md").write_text(
        "# MiniVLA\n\n## Data\n\nDemos: `arrcoc-steer collect --episodes 3 --out data/demos` (45 episodes). More.\n\n"
        "## Training\n\n1. `arrcoc-steer train --data data/demos --steps 100 --out runs/minivla`: step 100.\n"
        "2. `arrcoc-steer train --data data/demos --init runs/minivla/model --steps 50 --out runs/head`: step 50.\n\n"
        "Note: stage 1 was resumed.\n\n## Success\n\n| a table |\n")  # fmt: skip
    (tmp_path / "takeover").mkdir()
    eps = [{"task": "LiftRedBlock", "length": 9}] * 2
    (tmp_path / "takeover" / "index.json").write_text(json.dumps({"config": {"seed": 81, "takeover": "runs/head/model"},
                                                                   "episodes": eps}))  # fmt: skip
    run = tmp_path / "runs" / "refit"
    run.mkdir(parents=True)
    (run / "train_config.json").write_text(json.dumps({"data": [str(tmp_path / "demos"), str(tmp_path / "takeover")],
                                                       "batch_size": 256, "steps": 20, "train_only": "head",
                                                       "push_geometry": True, "bf16": False}))  # fmt: skip
    (run / "train_log.jsonl").write_text(json.dumps({"step": 20, "action_loss": 2.5, "samples_per_s": 256.0}))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"extra": {"episodes": 47, "frames": 400}}))
    card = write_model_card(model, [run], rewired=False, note="the takeover data came from stage 2.",
                            parent=parent / "MODEL_CARD.md").read_text()  # fmt: skip
    data = card.split("## Data")[1].split("## Training")[0]
    assert data.count("arrcoc-steer collect") == 2  # the parent's demos once, then the new folder
    assert ("`arrcoc-steer collect --episodes 2 --tasks LiftRedBlock --seed 81 --takeover runs/head/model "
            "--out data/takeover` (2 episodes)") in data  # fmt: skip
    assert "2. `arrcoc-steer train --data data/demos --init runs/minivla/model --steps 50 --out runs/head`" in card
    assert "3. `arrcoc-steer train --data data/demos data/takeover --init runs/head/model --batch-size 256 --steps 20" in card
    assert "--push-geometry --no-bf16 --out runs/refit`" in card  # booleans as the CLI spells them
    assert "Note: stage 1 was resumed." in card and "Note: the takeover data came from stage 2." in card
    assert (model / "train_curve.png").read_bytes() == b"\x89PNG parent curve"  # the parent's stages, kept
    assert (model / "train_curve_refit.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="no training stage"):
        write_model_card(model, [run], rewired=False, parent=model / "config.json")
