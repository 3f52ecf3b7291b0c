"""Smoke runs of the env examples and the demo helper."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_env_quickstart_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "env_quickstart.py"), run_name="__main__")
    assert "success=True" in capsys.readouterr().out


def test_expert_demo_writes_video(tmp_path):
    video = tmp_path / "demo.mp4"
    cmd = [sys.executable, str(ROOT / "examples" / "expert_demo.py"), "--tasks", "LiftRedBlock",
           "PushRedBlockToZone", "--video", str(video)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "LiftRedBlock" in out.stdout and "success 100%" in out.stdout
    assert video.stat().st_size > 1000
    import imageio.v2 as imageio

    frames = imageio.mimread(str(video), memtest=False)
    assert frames[0].shape == (128, 256, 3) and len(frames) > 20


def test_run_expert_demo_returns_success_rates():
    from envs.demo import run_expert_demo

    assert run_expert_demo(["LiftRedBlock"], episodes=2, video_path=None, seed=0) == {"LiftRedBlock": 1.0}
