import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arrcoc_steer.regions import RegionGrid
from arrcoc_steer.relevance import OcclusionSensitivity, RelevanceAllocator
from arrcoc_steer.viz.relevance import (
    episode_frame,
    plot_instructions,
    plot_relevance,
    token_overlay,
    write_episode_video,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_token_overlay_draws_the_level_of_detail():
    img = np.full((128, 128, 3), 128, np.uint8)
    tokens = np.ones(16, int)
    tokens[0], tokens[5] = 16, 4
    out = token_overlay(img, tokens, RegionGrid(), scale=2)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    interior = lambda y, x: out[y * 64 + 1 : (y + 1) * 64, x * 64 + 1 : (x + 1) * 64]  # inside the borders
    lines = lambda r: int((np.abs(r.astype(int) - r[3, 3].astype(int)).sum(-1) > 20).sum())
    assert lines(interior(0, 0)) > lines(interior(1, 1)) > lines(interior(3, 3)) == 0  # 16 > 4 > 1 token
    assert interior(0, 0).mean() > interior(3, 3).mean()  # coarse regions are dimmed


def test_figures_are_written(allocator, four_blocks, tmp_path):
    red = allocator(four_blocks, "put the red block in the tray", budget=100)
    blue = allocator(four_blocks, "put the blue block in the tray", budget=100)
    plot_relevance(red, four_blocks, tmp_path / "one.png")
    fig = plot_instructions([red, blue], four_blocks, tmp_path / "two.png")
    assert "IoU of detailed regions" in fig._suptitle.get_text()
    obs = {"agentview": four_blocks[0], "wrist": four_blocks[1]}
    reach, carry = (allocator(obs, "put the red block in the tray", budget=100, phase=p) for p in ("reach", "carry"))
    fig = plot_instructions([reach, carry], four_blocks, tmp_path / "phases.png")
    assert fig._suptitle.get_text().startswith("'put the red block in the tray': reach phase vs carry phase")
    assert fig.axes[0].get_ylabel().endswith("[reach]")
    for name in ("one.png", "two.png", "phases.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000


def test_figure_shows_the_procedural_map(grounder, four_blocks, tmp_path):
    class Stub:
        def predict_action(self, obs, instruction, *, allocation):
            return np.array([obs["agentview"][:32, :32].mean()])

    allocator = RelevanceAllocator(grounder=grounder, procedural=OcclusionSensitivity(Stub()))
    obs = {"agentview": four_blocks[0], "wrist": four_blocks[1]}
    r = allocator(obs, "lift the red block", budget=64)
    assert "procedural" in r.maps and r.maps["procedural"][0].argmax() == 0
    fig = plot_relevance(r, four_blocks, tmp_path / "proc.png")
    assert "procedural" in [ax.get_title() for ax in fig.axes]


def test_episode_video_has_one_frame_per_step(allocator, four_blocks, tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    steps = [(four_blocks, allocator(four_blocks, f"lift the {c} block", budget=64)) for c in ("red", "blue", "green")]
    frame = episode_frame(*steps[0])
    assert frame.shape == (30 + 3 * 128, 4 * 3 * 128, 3)
    path = write_episode_video(steps, tmp_path / "ep.mp4", fps=5)
    frames = [f for f in imageio.get_reader(path)]  # list() would ask len(), infinite for ffmpeg
    assert len(frames) == 3 and frames[0].shape == frame.shape


def test_example_script_runs(tmp_path):
    pytest.importorskip("envs")
    script = Path(__file__).resolve().parents[2] / "examples" / "relevance_maps.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--steps", "40"],
                          capture_output=True, text=True, timeout=300, cwd=script.parents[1])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # by step 40 the expert holds the block: phase.png compares the reaching and carrying allocations
    assert {p.name for p in tmp_path.iterdir()} == {"relevance.png", "compare.png", "episode.mp4", "phase.png"}
    assert "query sensitivity" in done.stdout
