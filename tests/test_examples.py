"""Smoke runs of the example scripts that are not exercised elsewhere (tiny settings)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "examples" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_steer_tiny_model_example_runs():
    out = run("steer_tiny_model.py")
    assert out.returncode == 0, out.stderr[-2000:]


def test_steering_effects_example_runs_end_to_end(tmp_path):
    """On the shipped policy: "up" is found from the states where the arm rises, which an untrained
    policy has none of."""
    out = run("steering_effects.py", "--out", str(tmp_path), "--tasks", "LiftRedBlock",
              "--seeds", "1", "--alphas", "4", "--controls", "1", "--strengths", "4", "--workers", "1", "--max-steps", "3")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("concepts.yaml", "concepts_reach.yaml", "concepts_action.yaml", "readout.safetensors",
                 "calibration.safetensors", "direction.safetensors",
                 "direction_lift.safetensors", "map_quickly.safetensors", "map_lift.safetensors", "sweeps/results.json",
                 "eval.html", "controls.html", "sweeps.html", "eval/results.json", "controls/results.json"):
        assert (tmp_path / name).is_file(), name
    from arrcoc_steer.steering import ResidualDirection

    reach = ResidualDirection.load(tmp_path / "direction.safetensors").layers
    assert len(reach) == 1  # the one layer where "quickly" - "slowly" is largest at the action queries
    main = (tmp_path / "eval" / "results.csv").read_text()
    assert "residual_direction_4_action" in main and "residual_direction_-4_action" in main
    assert "residual_map_quickly_1_action" in main and "residual_map_slowly_1_action" in main
    assert f"concept_fast_clamp4cal_action_L{reach[0]}" in main and "concept_fast_clamp4cal," in main
    controls = (tmp_path / "controls" / "results.csv").read_text()
    assert "random_residual_map_quickly_1_action_s0" in controls
    assert "random_residual_direction_4_action_s0" in controls and f"random_slow_clamp4cal_action_L{reach[0]}_s0" in controls
    assert "prompt_and_lift_it_high" in main and "residual_map_lift_1_action" in main
    assert "action_fast_clamp1.5cal" in main and "action_up_clamp0.5cal" in main
    assert "random_slow_clamp1cal_action_s0" in controls and "random_fast_clamp1.5cal_action_s0" in controls
    assert "action_slow_prompt_clamp0.5cal" in main and "action_up_prompt_clamp2cal" in main
    assert "random_slow_prompt_clamp0.5cal_action_s0" in controls
    sweeps = (tmp_path / "sweeps" / "results.csv").read_text()
    assert "residual_direction_lift_4_action" in sweeps and "action_fast_clamp0.5cal" in sweeps
    assert all(f"action_fast_clamp1.5cal_{depth}" in sweeps for depth in ("early", "middle", "late", "all"))
    screen = run("open_loop_effects.py", "--run", str(tmp_path), "--alphas", "1", "--per-task", "2")
    assert screen.returncode == 0, screen.stderr[-2000:]
    assert "map 'quickly', decode=argmax" in screen.stdout and "action concept 'slow' at 1: speed" in screen.stdout


def test_closed_loop_vs_fixed_example_prints_the_comparison(tmp_path):
    out = run("closed_loop_vs_fixed.py", "--seeds", "1", "--alphas", "0.5", "1.0", "--out", str(tmp_path), "--workers", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line[:1].isalnum()}
    assert {"closed_loop", "fixed_alpha_0.5", "fixed_alpha_1"} <= set(lines)
    assert "<- fixed alpha with the loop's mean effect" in out.stdout


def test_destination_sensitivity_example_probes_the_shipped_policy_while_it_carries():
    out = run("destination_sensitivity.py", "--tasks", "PutRedBlockOnPlate", "--seeds", "1", "--max-steps", "40")
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("PutRedBlockOnPlate"))
    carry_steps, sensitivity = int(row.split()[-2]), float(row.split()[-1])
    assert carry_steps > 0 and sensitivity >= 0  # it grasped within 40 steps, and the probe measured
    assert "1 of 1 episodes carried the target" in out.stdout


def test_oracle_pointer_example_runs_each_episode_with_both_pointers():
    out = run("oracle_pointer.py", "--tasks", "PickRedBlockIntoTray", "--seeds", "1", "--max-steps", "15", "--error-steps", "5")
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("PickRedBlockIntoTray"))
    own, oracle, error = row.split()[2:]
    assert own in ("True", "False") and oracle in ("True", "False")
    assert 0.0 <= float(error) < 1.0  # a fraction of the image, measured against the segmentation
    assert "success: own pointer" in out.stdout and "true pointer" in out.stdout


def test_trace_episode_example_prints_beliefs_beside_the_truth():
    out = run("trace_episode.py", "--task", "PutRedInTrayThenBlueOnPlate", "--seed", "7000002", "--max-steps", "12",
              "--every", "5")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line[:4].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [0, 5, 10]
    assert all(r[1] == "in(red_block," for r in rows)  # the first subgoal throughout 12 steps
    # target and destination are both in the agent view at the start: the segmentation's presence is 1
    assert rows[0].count("1.00") >= 2 and "|" in rows[0]
    assert "success: False after 12 steps" in out.stdout
    bad = run("trace_episode.py", "--task", "PutRedInTrayThenBlueOnPlate", "--every", "0")
    assert bad.returncode == 2 and "--every must be >= 1" in bad.stderr


def test_trace_episode_prints_the_replanned_experts_action_without_changing_the_episode():
    args = ("trace_episode.py", "--task", "PushRedBlockToZone", "--seed", "7000000", "--max-steps", "6", "--every", "5")
    plain, traced = run(*args), run(*args, "--actions")
    assert plain.returncode == 0 and traced.returncode == 0, traced.stderr[-2000:]
    rows = [[line for line in out.stdout.splitlines() if line[:4].strip().isdigit()] for out in (plain, traced)]
    assert rows[0] == rows[1] and len(rows[0]) == 2  # asking the expert leaves the policy's episode as it was
    expert = [line for line in traced.stdout.splitlines() if "expert 'push_reach'" in line]
    assert len(expert) == 2 and "expert" not in plain.stdout
    # the expert first turns the hand to face the push: its yaw command is saturated
    assert "| -1.00 (" in expert[0].split("dyaw")[1] or "| +1.00 (" in expert[0].split("dyaw")[1]
    splits = [float(x) for x in expert[0].split("(")[-1].rstrip(")").split("/")]
    assert all(0.0 <= x <= 1.0 for x in splits)


def test_push_turn_example_sorts_push_episodes_by_the_turn_they_need(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    header = "task,condition,seed,success,outcome\n"
    rows = [f"PushRedBlockToZone,budget_uniform_400,{1_000_000 + i},{i % 2}.0,x\n" for i in range(4)]
    (run_dir / "results.csv").write_text(header + "".join(rows) + "LiftRedBlock,budget_uniform_400,1,1.0,success\n")
    out = run("push_turn.py", str(run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 4  # the push episodes only
    turns = [float(r[0]) for r in lines]
    assert turns == sorted(turns) and all(0 <= t <= np.pi for t in turns)
    assert "median turn" in out.stdout and "(n=" in out.stdout
    bad = run("push_turn.py", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "has no results.csv" in bad.stderr
