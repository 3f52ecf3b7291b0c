"""Seeing ARR-COC: why each region got its tokens, as PNG figures and episode videos.

* ``plot_relevance(result, images)`` -- one observation: per camera the image, every way-of-knowing
  map, the final relevance, the budget (each region drawn with its actual token partition), which
  way of knowing dominated, and the winning pole of each tension.
* ``plot_instructions(results, images)`` -- one observation under several instructions side by side,
  titled with the IoU of their detailed-region sets (query sensitivity).
* ``write_episode_video(steps, path)`` -- an episode as mp4: budget overlays of both cameras and the
  relevance heat map per step (frames drawn with numpy, fast enough to run beside a rollout).

``token_overlay`` draws levels of detail: a region encoded with n tokens shows the n groups of its
nested k-d partition (``RegionGrid.pooling``) and is dimmed in proportion to how coarse it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..regions import RegionGrid
from ..relevance.allocating import LABELS, RelevanceResult
from ..relevance.balancing import TENSIONS
from ..relevance.metrics import query_sensitivity_iou

WAY_COLOURS = {  # colour-blind-safe (Okabe-Ito)
    "propositional": "#0072B2", "perspectival": "#E69F00", "participatory": "#009E73",
    "procedural": "#CC79A7", "steering": "#D55E00", "none": "#BBBBBB",
}  # fmt: skip
POLE_COLOURS = ("#56B4E9", "#F0E442")  # first pole, second pole


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], np.float64)


@lru_cache(maxsize=8)
def _partition_edges(grid: RegionGrid, scale: int) -> np.ndarray:
    """``(max_level, P, P)`` bool, P = region_px * scale: token-group boundaries at each level."""
    c, p = grid.cells, grid.region_px * scale
    cell = p // c
    out = np.zeros((grid.max_level, p, p), bool)
    for level, pool in enumerate(grid.pooling):
        owner = np.zeros(c * c, int)
        for k, row in enumerate(pool):
            owner[row > 0] = k
        px = np.repeat(np.repeat(owner.reshape(c, c), cell, 0), cell, 1)  # (P, P) group id per pixel
        edge = np.zeros((p, p), bool)
        edge[:, 1:] |= px[:, 1:] != px[:, :-1]
        edge[1:, :] |= px[1:, :] != px[:-1, :]
        out[level] = edge
    return out


def token_overlay(image: np.ndarray, tokens: np.ndarray, grid: RegionGrid | None = None, scale: int = 3) -> np.ndarray:
    """``(S*scale, S*scale, 3)`` uint8: ``image`` with each region's token partition drawn on it."""
    grid = grid or RegionGrid()
    g, p = grid.grid, grid.region_px * scale
    big = np.repeat(np.repeat(np.asarray(image, np.float64), scale, 0), scale, 1)
    t = np.asarray(tokens).reshape(g, g)
    dim = 0.35 + 0.65 * (t - 1) / max(grid.max_level - 1, 1)  # coarse regions fade
    big *= np.repeat(np.repeat(dim, p, 0), p, 1)[..., None]
    edges = _partition_edges(grid, scale)[t - 1]  # (g, g, P, P)
    mask = edges.transpose(0, 2, 1, 3).reshape(g * p, g * p)
    big[mask] = 0.6 * big[mask] + 0.4 * 255
    border = np.zeros(big.shape[:2], bool)
    border[::p] = border[:, ::p] = True
    big[border] = 255
    return big.clip(0, 255).astype(np.uint8)


def heat_overlay(image: np.ndarray, cells: np.ndarray, scale: int = 3, vmax: float | None = None) -> np.ndarray:
    """``image`` blended with a cell map in the 'inferno' colour map (the map upsampled, nearest)."""
    from matplotlib import colormaps

    s = image.shape[0] * scale
    m = np.asarray(cells, np.float64)
    m = m / (vmax or max(m.max(), 1e-9))
    rep = s // m.shape[0]
    heat = colormaps["inferno"](np.repeat(np.repeat(m.clip(0, 1), rep, 0), rep, 1))[..., :3] * 255
    big = np.repeat(np.repeat(np.asarray(image, np.float64), scale, 0), scale, 1)
    alpha = 0.2 + 0.7 * np.repeat(np.repeat(m.clip(0, 1), rep, 0), rep, 1)[..., None]  # hot = opaque
    return ((1 - alpha) * 0.6 * big + alpha * heat).astype(np.uint8)


def _categorical(image, labels, colours, grid, alpha) -> np.ndarray:
    """Image tinted per region by ``colours[label]`` with per-region opacity ``alpha``."""
    g, r = grid.grid, grid.region_px
    tint = np.stack([_rgb(colours[str(x)]) for x in np.asarray(labels).ravel()]).reshape(g, g, 3)
    a = np.asarray(alpha, np.float64).reshape(g, g, 1)
    tint_px = np.repeat(np.repeat(tint, r, 0), r, 1)
    a_px = np.repeat(np.repeat(a, r, 0), r, 1)
    out = (1 - a_px) * np.asarray(image, np.float64) + a_px * tint_px
    return out.astype(np.uint8)


def _grid_lines(ax, grid: RegionGrid, size: int):
    for k in range(1, grid.grid):
        x = k * size / grid.grid - 0.5
        ax.axhline(x, color="white", lw=0.5, alpha=0.6)
        ax.axvline(x, color="white", lw=0.5, alpha=0.6)


def _region_values(ax, values, grid: RegionGrid, size: int, fmt: str, colour="white"):
    r = size / grid.grid
    for i, v in enumerate(np.asarray(values).ravel()):
        y, x = divmod(i, grid.grid)
        ax.text((x + 0.5) * r - 0.5, (y + 0.5) * r - 0.5, format(v, fmt), ha="center", va="center",
                fontsize=7, color=colour, fontweight="bold")  # fmt: skip


def plot_relevance(result: RelevanceResult, images: np.ndarray, path: str | Path | None = None):
    """Per camera: image | ways of knowing | relevance | budget | dominant way | three tensions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    grid, images = result.grid, np.asarray(images)
    ways = list(result.cell_maps)
    cols = ["image", *ways, "relevance", "budget", "dominant", *TENSIONS]
    n = len(result.cameras)
    fig, axes = plt.subplots(n, len(cols), figsize=(2.3 * len(cols), 2.7 * n + 1.0), squeeze=False)
    rel_max = max(float(result.relevance.max()), 1e-9)
    for i, cam in enumerate(result.cameras):
        img, s = images[i], images[i].shape[0]
        panels = {"image": img}
        for w in ways:
            panels[w] = heat_overlay(img, result.cell_maps[w][i], scale=1, vmax=1.0)
        panels["relevance"] = heat_overlay(img, result.relevance[i].reshape(grid.grid, grid.grid), 1, rel_max)
        panels["budget"] = token_overlay(img, result.allocation[i], grid, scale=2)
        alpha = 0.25 + 0.5 * result.relevance[i] / rel_max
        panels["dominant"] = _categorical(img, result.dominant[i], WAY_COLOURS, grid, alpha)
        for t, (a, b) in TENSIONS.items():
            cmap = {a: POLE_COLOURS[0], b: POLE_COLOURS[1]}
            opacity = np.full(grid.regions_per_camera, 0.55)
            panels[t] = _categorical(img, result.tension_winners[t][i], cmap, grid, opacity)
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(panels[name], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            size = panels[name].shape[0]
            if name == "budget":
                _region_values(ax, result.allocation[i], grid, size, "d", "yellow")
            elif name != "image":
                _grid_lines(ax, grid, size)
            if name in ways:
                ax.set_xlabel(f"strength {result.strength[name][i]:.2f}", fontsize=7)
            if name == "relevance":
                _region_values(ax, result.relevance[i], grid, size, ".2f")
            if name in TENSIONS:
                a, b = TENSIONS[name]
                ax.set_xlabel(f"blue: {a}   yellow: {b}", fontsize=7)
            if i == 0:
                ax.set_title(name.replace("_vs_", " vs\n"), fontsize=10)
        axes[i, 0].set_ylabel(cam, fontsize=10)
    present = [w for w in LABELS if w in set(np.unique(result.dominant))]
    handles = [Patch(color=WAY_COLOURS[w], label=w) for w in present]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False,
               title="dominant way of knowing (opacity: relevance)", title_fontsize=9)  # fmt: skip
    fig.suptitle(f"{result.instruction!r}  |  budget {result.budget} tokens  |  phase {result.phase}", fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _row_label(result: RelevanceResult, results: Sequence[RelevanceResult]) -> str:
    """The instruction, and the phase when the rows differ in it."""
    phases = {r.phase for r in results}
    return f"{result.instruction}" + (f" [{result.phase}]" if len(phases) > 1 else "")


def plot_instructions(results: Sequence[RelevanceResult], images: np.ndarray, path: str | Path | None = None):
    """One observation under several instructions (or phases of one): participatory map, budget and
    dominance per camera, a row per result."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    cams = results[0].cameras
    cols = [(c, k) for c in cams for k in ("participatory", "budget", "dominant")]
    size = (2.0 * len(cols), 2.2 * len(results) + 0.6)
    fig, axes = plt.subplots(len(results), len(cols), figsize=size, squeeze=False)
    for r, res in enumerate(results):
        grid = res.grid
        for j, (cam, kind) in enumerate(cols):
            i, img, ax = cams.index(cam), images[cams.index(cam)], axes[r, j]
            if kind == "participatory":
                ax.imshow(heat_overlay(img, res.cell_maps["participatory"][i], 1, 1.0))
                _grid_lines(ax, grid, img.shape[0])
            elif kind == "budget":
                ax.imshow(token_overlay(img, res.allocation[i], grid, 2))
                _region_values(ax, res.allocation[i], grid, 2 * img.shape[0], "d", "yellow")
            else:
                alpha = 0.25 + 0.5 * res.relevance[i] / max(res.relevance.max(), 1e-9)
                ax.imshow(_categorical(img, res.dominant[i], WAY_COLOURS, grid, alpha))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{cam}: {kind}", fontsize=9)
        axes[r, 0].set_ylabel(_row_label(res, results), fontsize=8, wrap=True)
    from matplotlib.patches import Patch

    present = [w for w in LABELS if any(w in set(np.unique(r.dominant)) for r in results)]
    handles = [Patch(color=WAY_COLOURS[w], label=w) for w in present]
    fig.legend(handles=handles, loc="lower center", ncol=len(present), fontsize=8, frameon=False,
               title="dominant way of knowing", title_fontsize=8)  # fmt: skip
    if len({r.instruction for r in results}) == 1:
        title = f"{results[0].instruction!r}: " + " vs ".join(f"{r.phase} phase" for r in results)
    else:
        title = " vs ".join(repr(r.instruction) for r in results)
    if len(results) == 2:
        iou = query_sensitivity_iou(results[0].allocation, results[1].allocation)
        title += f"\nIoU of detailed regions {iou:.2f} (budget {results[0].budget})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def episode_frame(images: np.ndarray, result: RelevanceResult, caption: str = "", scale: int = 3) -> np.ndarray:
    """One video frame: budget overlay of each camera, then each camera's relevance, with labels."""
    from PIL import Image, ImageDraw

    grid, cams = result.grid, result.cameras
    tiles = [token_overlay(images[i], result.allocation[i], grid, scale) for i in range(len(cams))]
    rel = result.relevance.max()
    for i in range(len(cams)):
        tiles.append(heat_overlay(images[i], result.relevance[i].reshape(grid.grid, grid.grid), scale, rel))
    labels = [f"{c}: tokens" for c in cams] + [f"{c}: relevance" for c in cams]
    header = 30
    body = np.concatenate(tiles, 1)
    frame = np.full((body.shape[0] + header, body.shape[1], 3), 255, np.uint8)
    frame[header:] = body
    pil = Image.fromarray(frame)
    draw = ImageDraw.Draw(pil)
    draw.text((6, 2), caption or f"{result.instruction}  |  B={result.budget}  |  {result.phase}", fill=(0, 0, 0))
    for k, label in enumerate(labels):
        draw.text((k * tiles[0].shape[1] + 6, 16), label, fill=(90, 90, 90))
    return np.asarray(pil)


def write_episode_video(steps: Iterable[tuple[np.ndarray, RelevanceResult]], path: str | Path, fps: int = 10) -> Path:
    """Write ``(images, result)`` pairs of an episode as an mp4 (H.264 via imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
        for t, (images, result) in enumerate(steps):
            caption = f"t={t}  {result.instruction}  |  B={result.budget}  |  {result.phase}"
            writer.append_data(episode_frame(images, result, caption))
    return path
