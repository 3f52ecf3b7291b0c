"""Smoke run of examples/evaluate_policy.py."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_policy_example_runs(tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "evaluate_policy.py"), "--tasks", "LiftRedBlock", "--seeds", "2",
           "--workers", "1", "--out", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "prompt_quickly" in out.stdout and (tmp_path / "results.csv").is_file()
