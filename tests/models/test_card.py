import json

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
