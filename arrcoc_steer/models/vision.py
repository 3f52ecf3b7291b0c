"""Visual tokens at a per-region level of detail.

A small CNN turns each camera image into a grid of feature cells (stride 8: 16 x 16 cells at 128 px).
Given an allocation (tokens per region, see :mod:`arrcoc_steer.regions`), each region's cells are
averaged into that many tokens along a fixed nested partition, and every token gets an embedding of
where it is (camera, centroid) and how coarse it is (log2 of its cell count). Any allocation with
any total between 64 and 400 tokens is therefore a valid input, and a relevance-based allocation
plugs in without retraining.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from ..regions import RegionGrid


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.SiLU()
    )


class CellEncoder(nn.Module):
    """(B, 3, H, W) uint8 -> (B, (H/8) * (W/8), dim) cell features, row-major."""

    def __init__(self, dim: int = 128, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            _block(3, width, 2),
            _block(width, 2 * width, 2),
            _block(2 * width, 2 * width, 1),
            _block(2 * width, 4 * width, 2),
            _block(4 * width, 4 * width, 1),
            nn.Conv2d(4 * width, dim, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        return self.net(x).flatten(2).transpose(1, 2)  # (B, cells, dim)


class VisualTokenizer(nn.Module):
    """Cells of every camera + allocation -> visual tokens in the backbone's embedding space."""

    def __init__(self, grid: RegionGrid, d_model: int, cell_dim: int = 128, width: int = 32, n_freq: int = 6):
        super().__init__()
        self.grid = grid
        self.encoder = CellEncoder(cell_dim, width)
        self.n_freq = n_freq
        n_sizes = int(math.log2(grid.max_level)) + 1
        pos_dim = 4 * n_freq + n_sizes + grid.n_cameras
        self.feature_proj = nn.Linear(cell_dim, d_model)
        self.position_proj = nn.Linear(pos_dim, d_model)
        self._build_tables()

    def _build_tables(self) -> None:
        """Per level n: pooling rows over a region's cells and each token's (x, y, log2 size)."""
        g, c = self.grid.grid, self.grid.cells
        side = g * c  # cells per image side
        # cell_index[r, j]: flat index in the camera's (side x side) cell map of cell j of region r
        ry, rx = np.divmod(np.arange(g * g), g)
        cy, cx = np.divmod(np.arange(c * c), c)
        self.cell_index = ((ry[:, None] * c + cy[None]) * side + rx[:, None] * c + cx[None]).astype(np.int64)
        self.region_origin = np.stack([rx, ry], 1).astype(np.float32)

    def encode_cells(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """{camera: (B, H, W, 3) uint8} -> (B, n_cameras * cells_per_image, cell_dim)."""
        cams = [images[name].permute(0, 3, 1, 2) for name in self.camera_names]
        b = cams[0].shape[0]
        feats = self.encoder(torch.cat(cams, 0))  # (n_cam * B, cells, dim)
        return feats.view(len(cams), b, *feats.shape[1:]).transpose(0, 1).flatten(1, 2)

    camera_names = ("agentview", "wrist")

    def pooling_plan(self, allocation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One allocation (n_cam, regions) -> pooling matrix (T, n_cam * cells) and geometry (T, 4)."""
        grid = self.grid
        cells_per_cam = self.cell_index.size
        total = int(allocation.sum())
        pool = np.zeros((total, grid.n_cameras * cells_per_cam), np.float32)
        geom = np.zeros((total, 4), np.float32)  # camera, x, y, log2 size
        t = 0
        for cam in range(grid.n_cameras):
            for r in range(grid.regions_per_camera):
                n = int(allocation[cam, r])
                rows = slice(t, t + n)
                pool[rows, cam * cells_per_cam + self.cell_index[r]] = grid.pooling[n - 1]
                tg = grid.token_geometry[n - 1]
                geom[rows, 0] = cam
                geom[rows, 1:3] = (self.region_origin[r] + tg[:, :2]) / grid.grid
                geom[rows, 3] = tg[:, 2]
                t += n
        return pool, geom

    def position_features(self, geom: torch.Tensor) -> torch.Tensor:
        """(B, T, 4) geometry -> (B, T, pos_dim): Fourier features of the centroid, size, camera."""
        xy = geom[..., 1:3]
        freqs = (2.0 ** torch.arange(self.n_freq, device=geom.device)) * math.pi
        ang = xy[..., None] * freqs  # (B, T, 2, F)
        fourier = torch.cat([ang.sin(), ang.cos()], -1).flatten(-2)
        n_sizes = int(math.log2(self.grid.max_level)) + 1
        size = nn.functional.one_hot(geom[..., 3].round().long(), n_sizes).float()
        cam = nn.functional.one_hot(geom[..., 0].long(), self.grid.n_cameras).float()
        return torch.cat([fourier, size, cam], -1)

    def plans(self, allocations: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Allocations (B, n_cam, regions) with equal totals -> pooling (B, T, cells) and geometry (B, T, 4)."""
        plans = [self._cached_plan(a.tobytes(), a.shape) for a in np.asarray(allocations, np.int64)]
        pool = torch.from_numpy(np.stack([p for p, _ in plans])).to(device)
        geom = torch.from_numpy(np.stack([g for _, g in plans])).to(device)
        return pool, geom

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one tokenizer per policy; plans repeat every step)
    def _cached_plan(self, key: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        return self.pooling_plan(np.frombuffer(key, np.int64).reshape(shape))

    def forward(self, images: dict[str, torch.Tensor], pool: torch.Tensor, geom: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W, 3) per camera + a pooling plan (see :meth:`plans`) -> tokens (B, T, d)."""
        cells = self.encode_cells(images)  # (B, n_cam * cells, cell_dim)
        tokens = torch.bmm(pool.to(cells.dtype), cells)  # (B, T, cell_dim)
        pos = self.position_features(geom).to(tokens.dtype)
        return self.feature_proj(tokens) + self.position_proj(pos)
