"""Behaviour cloning of MiniVLA on the scripted-expert demos, in one file (CleanRL style).

Loss: cross-entropy over the 256 action bins of every action dimension, against a Gaussian-smoothed
target (sigma = ``label_sigma`` bins) so neighbouring bins count as nearly right. Each batch draws
one visual budget (half of them 64..128, the rest up to 400) and a random allocation per sample
(half uniform, half random relevance), so the policy works at every budget and under any ARR-COC
allocation without retraining. Images get random shifts (DrQ). Mixed precision (bf16) on CPU and
GPU. Checkpoints hold the model, the optimizer and every RNG, so ``resume`` continues the same run.
``--train-only head --head-cache N`` refits only the action head, on the frozen backbone's outputs
for N frames computed once (:mod:`arrcoc_steer.head_cache`). ``--train-only grounding`` adds the
text-conditioned grounding correction (:class:`~arrcoc_steer.models.minivla.GroundingFiLM`) to a
trained policy and fits only it, on the grounding and pointer losses: the backbone and the action
head stay exactly as they were.

    arrcoc-steer train --data data/demos --out runs/minivla
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import FrameDataset
from .config import option
from .errors import ConfigError
from .models.minivla import GRIPPER_DIM, MiniVLA, MiniVLAConfig, fingers_closed
from .regions import CAMERAS, MAX_BUDGET, MIN_BUDGET, RegionGrid


@dataclass
class TrainConfig:
    """Training run settings; every field is also a ``arrcoc-steer train`` flag."""

    data: tuple[str, ...] = option(("data/demos",), 'dataset directories written by `arrcoc-steer collect`')
    out: str = option("runs/minivla", 'run folder: checkpoint/, model/, train_log.jsonl, train_curve.png (and head_cache_*.safetensors with --head-cache)')
    steps: int = option(4000, 'optimizer steps')
    batch_size: int = option(64, 'frames per optimizer step')
    lr: float = option(8e-4, 'peak learning rate (linear warmup, cosine decay to 10%)')
    warmup: int = option(200, 'linear warmup steps')
    weight_decay: float = option(0.01, 'AdamW weight decay (not on embeddings, norms, biases)')
    grad_clip: float = option(1.0, 'gradient-norm clip')
    label_sigma: float = option(3.0, 'width of the smoothed bin target, in bins')
    shift_px: int = option(6, 'random-shift augmentation')
    low_budget_frac: float = option(0.65, 'fraction of batches with budget in 64..128')
    uniform_frac: float = option(0.5, 'fraction of samples with uniform allocation')
    grounding_weight: float = option(0.5, 'weight of the per-token grounding loss (needs grounding labels in the data)')
    teacher_forcing: float = option(0.5, 'share of samples whose action head reads the true pointer (needs grounding labels)')
    holdout_frac: float = option(0.05, 'episodes kept out of training for the validation curve')
    seed: int = option(0, 'seed of initialisation, batches, augmentation and the held-out split')
    device: str = option("auto", 'auto | cpu | cuda')
    bf16: bool = option(True, 'bfloat16 autocast (AVX512-BF16 CPUs and GPUs run it several times faster)')
    checkpoint_every: int = option(250, 'steps between resumable checkpoints')
    log_every: int = option(50, 'steps between log records (train_log.jsonl)')
    resume: bool = option(True, 'continue from out/checkpoint when it exists')
    init: str = option("", 'start from the weights of this saved model (fine-tuning, e.g. on new demos); "" = fresh')
    train_only: str = option(
        "all", 'all | head | grounding: "head" trains only the action head and its pointer input (backbone and vision frozen and run forward only: 1.75 vs 3.98 s per CPU step measured); "grounding" adds and trains only the text-conditioned grounding correction, on the grounding losses'
    )
    max_minutes: float = option(
        0.0, 'wall-clock budget of this run: steps is lowered to what fits, timed on its first 25 steps (0 = none)'
    )
    head_cache: int = option(
        0, 'with --train-only head or grounding: run the frozen backbone once over this many training frames and fit the head (or the grounding correction) on its cached outputs, many epochs in minutes (0 = off)'
    )
    early_frac: float = option(0.0, 'share of training frames drawn from the first frames of episodes (t <= 5), where the policy picks which block to fetch')
    carry_weight: float = option(1.0, 'loss weight of carry frames (hand closed, moving sideways: where the destination decides the action)')
    lower_weight: float = option(1.0, 'loss weight of lowering frames (hand closed, descending: the placement the carry ends in)')
    push_geometry: bool = option(False, 'the action head also reads the target-to-destination direction and distance from its pointer (MiniVLA push_geometry; zero-initialised on a model without it)')

    def __post_init__(self):
        self.data = tuple(self.data)
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr must be in (0, 1), got {self.lr}")
        if self.train_only not in TRAINABLE:
            raise ConfigError(f"train_only must be one of {sorted(TRAINABLE)}, got {self.train_only!r}")
        if not self.max_minutes >= 0:
            raise ConfigError(f"max_minutes must be >= 0 (0 = no budget), got {self.max_minutes}")
        if not 0 <= self.early_frac <= 1:
            raise ConfigError(f"early_frac must be in [0, 1], got {self.early_frac}")
        if self.head_cache < 0 or (self.head_cache and self.train_only not in CACHEABLE):
            raise ConfigError(f"head_cache must be 0, or a frame count with train_only in {CACHEABLE} (the backbone must be "
                              f"frozen for its outputs to be cached); got head_cache={self.head_cache}, "
                              f"train_only={self.train_only!r}")  # fmt: skip
        if self.push_geometry and self.train_only == "grounding":
            raise ConfigError("push_geometry adds inputs to the action head, which train_only='grounding' does not "
                              "train; use train_only='head' (or 'all')")  # fmt: skip
        for name in ("carry_weight", "lower_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 (1 = every frame alike), got {getattr(self, name)}")


# What ``train_only`` leaves trainable (parameter-name prefixes; None = everything that trains).
TRAINABLE = {"all": None, "head": ("head.", "head_bias", "pointer_proj."), "grounding": ("grounding_film.",)}
CACHEABLE = ("head", "grounding")
EARLY_STEPS = 5  # ``early_frac`` draws from frames t <= EARLY_STEPS of each episode
CACHE_BATCH = 256  # frames per forward pass while caching: 1.31x the frames/s of 64 (benchmarks/bench_allocator.py)
BUDGET_PROBE = (5, 25)  # steps into a run between which ``max_minutes`` times a step (after warm-up kernels)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sample_allocations(grid: RegionGrid, n: int, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """One budget for the batch; per sample a uniform or a random-relevance allocation."""
    if rng.random() < cfg.low_budget_frac:
        budget = int(rng.integers(MIN_BUDGET, 129))
    else:
        budget = int(rng.integers(129, MAX_BUDGET + 1))
    allocs = []
    for _ in range(n):
        if rng.random() < cfg.uniform_frac:
            allocs.append(grid.uniform(budget))
        else:  # peaked random relevance: a few regions matter a lot
            allocs.append(grid.allocate(rng.gamma(0.5, size=grid.n_regions), budget))
    return np.stack(allocs)


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """(B, H, W, 3) -> same shape, each image shifted by up to ``pad`` pixels (edge padding)."""
    if pad == 0:
        return images
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, b))
    return np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


POINTER_WEIGHT = 4.0  # pointer L1 is in image fractions (0.05 = 6 px); scaled to matter next to the CE


def grounding_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of each visual token's class logits (B, T, C) against its label, the class
    mix of the pixels it pools (:func:`token_labels`)."""
    return -(labels * torch.log_softmax(logits.float(), -1)).sum(-1).mean()


def token_labels(pooling: torch.Tensor, cell_counts: torch.Tensor) -> torch.Tensor:
    """Each visual token's class distribution: the pixels of the cells it averages.
    (B, T, cells) pooling + (B, cells, C) counts -> (B, T, C)."""
    cells = cell_counts.float()
    cells = cells / cells.sum(-1, keepdim=True).clamp_min(1)
    return torch.bmm(pooling.float(), cells)


def true_pointer(cell_counts: torch.Tensor, n_cam: int) -> torch.Tensor:
    """The pointer the labels imply: per camera and pointed class, the pixel centroid (x, y) in [0, 1]
    and whether at least 8 pixels of it are in view. (B, n_cam * cells, C) -> (B, n_cam, K, 3)."""
    from .models.minivla import POINTED

    b, n_cells, _ = cell_counts.shape
    side = int(round((n_cells // n_cam) ** 0.5))
    idx = torch.arange(side * side, device=cell_counts.device)
    centres = torch.stack([(idx % side + 0.5) / side, (idx // side + 0.5) / side], -1)  # (cells, 2)
    counts = cell_counts.float().view(b, n_cam, side * side, -1)[..., list(POINTED)]  # (B, n_cam, cells, K)
    mass = counts.sum(2)  # (B, n_cam, K)
    xy = torch.einsum("bnck,cj->bnkj", counts, centres) / mass.clamp_min(1)[..., None]
    return torch.cat([xy, (mass >= 8).float()[..., None]], -1)


def pointer_loss(pointer: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """L1 between the pointer's expected (x, y) and the true centroid of each pointed class, per
    camera, where that class is in view: it teaches the policy *where* things are, directly."""
    seen = truth[..., 2:3]
    err = (pointer[..., :2].float() - truth[..., :2]).abs() * seen
    return err.sum() / seen.sum().clamp_min(1) / 2


def carry_frames(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the hand is closed, stays closed and moves sideways by over 0.3 of the largest step:
    the carry and push phases, the frames where the destination decides the action."""
    return _keeps_hand_closed(state, action) & (action[:, :2].norm(dim=1) > 0.3)


def lower_frames(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the hand is closed, stays closed and descends by over 0.3 of the largest step while
    moving sideways by less: lowering a held block onto its destination (or a closed hand to push
    height). Its onset is one frame per placement among many carry frames that say "stay up", so
    without extra weight a policy hovers over the destination."""
    return _keeps_hand_closed(state, action) & (action[:, 2] < -0.3) & (action[:, :2].norm(dim=1) < 0.3)


def _keeps_hand_closed(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the fingers are closed and the action keeps them closed (not a release)."""
    return fingers_closed(state) & (action[:, GRIPPER_DIM] > 0)


def smoothed_targets(bins: torch.Tensor, n_bins: int, sigma: float) -> torch.Tensor:
    """(B, D) bin indices -> (B, D, n_bins) Gaussian target distributions."""
    grid = torch.arange(n_bins, device=bins.device, dtype=torch.float32)
    logits = -0.5 * ((grid - bins[..., None].float()) / sigma) ** 2
    return torch.softmax(logits, -1)


class Trainer:
    """Owns the model, optimizer, data and RNGs of one run; ``run()`` trains to ``cfg.steps``."""

    def __init__(self, cfg: TrainConfig, model_config: MiniVLAConfig | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        if cfg.init:  # fine-tune: weights and architecture from the saved model, a fresh optimizer
            self.model = MiniVLA.from_pretrained(cfg.init, self.device).train()
        else:
            self.model = MiniVLA(model_config).to(self.device).train()
        if cfg.train_only == "grounding":
            self.model.add_grounding_film()
        if cfg.push_geometry:
            self.model.add_push_geometry()
        prefixes = TRAINABLE[cfg.train_only]
        if prefixes is not None:  # nothing upstream of the head needs a gradient: autograd skips it
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith(prefixes))
        self.grid = self.model.region_grid
        self.data = FrameDataset(list(cfg.data))
        if cfg.train_only == "grounding" and not self.data.has_grounding:
            raise ConfigError(f"train_only='grounding' needs grounding labels; {list(cfg.data)} has none "
                              "(collect demos with `arrcoc-steer collect`, which records them)")  # fmt: skip
        self.train_rows, self.val_rows = holdout_split(self.data, cfg.holdout_frac, cfg.seed)
        self.early_rows = self.train_rows[self.data.index[self.train_rows, 1] <= EARLY_STEPS]
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.cache = self.val_cache = None
        self.cache_seconds = 0.0  # building (or reading) the --head-cache caches: part of the run's cost
        if cfg.head_cache:
            t0 = time.perf_counter()
            self.cache, self.val_cache = self._caches()
            self.cache_seconds = time.perf_counter() - t0

    def draw_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` training frames: the share ``early_frac`` from episodes' first frames, the rest from all."""
        n_early = int(round(n * self.cfg.early_frac)) if len(self.early_rows) else 0
        rows = self.train_rows
        if n_early == 0:  # the draw of runs before early_frac existed, so their caches stay valid
            return rng.choice(rows, n, replace=len(rows) < n)
        return np.concatenate([rng.choice(self.early_rows, n_early, replace=len(self.early_rows) < n_early),
                               rng.choice(rows, n - n_early, replace=len(rows) < n - n_early)])  # fmt: skip

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "word_embeddings" not in name else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95))

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    # -- one step --------------------------------------------------------------------------
    def model_inputs(self, batch: dict, augment: bool, rng: np.random.Generator) -> tuple:
        """A batch of frames -> the model's inputs (images, state, ids, mask, allocations), with a
        random shift when ``augment`` and one random budget and allocations drawn from ``rng``."""
        images = {}
        for cam in CAMERAS:
            img = random_shift(batch[cam], self.cfg.shift_px, rng) if augment else batch[cam]
            images[cam] = torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
        state = torch.from_numpy(batch["state"]).to(self.device)
        ids, mask = self.model.tokenize(batch["instruction"])
        allocations = sample_allocations(self.grid, len(state), rng, self.cfg)
        return images, state, ids, mask, allocations

    def action_loss(self, logits: torch.Tensor, action: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Smoothed-bin cross-entropy (carry and lowering frames weighted by ``carry_weight`` and
        ``lower_weight``) and the argmax action's mean absolute error, overall, in xyz and on the gripper."""
        bins = torch.from_numpy(self.model.action_tokenizer.to_bins(action.cpu().numpy())).to(logits.device)
        target = smoothed_targets(bins, self.model.config.n_bins, self.cfg.label_sigma)
        ce = -(target * torch.log_softmax(logits.float(), -1)).sum(-1).mean(-1)  # (B,)
        weight = (1.0 + (self.cfg.carry_weight - 1.0) * carry_frames(state, action).float()
                  + (self.cfg.lower_weight - 1.0) * lower_frames(state, action).float())  # fmt: skip
        loss = (ce * weight).sum() / weight.sum()
        pred = self.model.action_tokenizer.centers[logits.argmax(-1).cpu().numpy()]
        err = np.abs(pred - action.cpu().numpy()).mean(0)
        stats = dict(action_loss=loss.item(), l1=float(err.mean()), l1_xyz=float(err[:3].mean()), l1_grip=float(err[6]))
        return loss, stats

    def loss_on(self, rows: np.ndarray, augment: bool) -> tuple[torch.Tensor, dict]:
        batch = self.data.batch(rows)
        images, state, ids, mask, allocations = self.model_inputs(batch, augment, self.rng)
        counts = torch.from_numpy(batch["grounding"]).to(self.device) if "grounding" in batch else None
        truth = true_pointer(counts, self.grid.n_cameras) if counts is not None else None
        grounding_only = self.cfg.train_only == "grounding"
        teacher = None
        if truth is not None and augment and self.cfg.teacher_forcing > 0 and not grounding_only:
            use = torch.from_numpy(self.rng.random(len(rows)) < self.cfg.teacher_forcing).to(self.device)
            teacher = (truth, use)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            out = self.model(images, state, ids, mask, allocations, teacher)
        action = torch.from_numpy(batch["action"]).to(self.device)
        loss, stats = self.action_loss(out.action_logits, action, state)
        if counts is not None and self.cfg.grounding_weight > 0:
            g_loss = grounding_loss(out.grounding_logits, token_labels(out.pooling, counts))
            p_loss = pointer_loss(out.pointer, truth)
            g_total = g_loss + POINTER_WEIGHT * p_loss
            loss = g_total if grounding_only else loss + self.cfg.grounding_weight * g_total
            stats.update(grounding_loss=g_loss.item(), pointer_l1=p_loss.item())
        stats["loss"] = loss.item()
        return loss, stats

    def grounding_loss_on_chunk(self, chunk: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The grounding losses of :meth:`loss_on` on one cached chunk (``--train-only grounding
        --head-cache``): what the grounding heads read is cached, so only they run."""
        from .models.minivla import GroundingInputs, pointer_features

        seen = GroundingInputs(chunk["visual_out"], chunk["visual_in"], chunk["text"], chunk["geom"])
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            logits = self.model.ground(seen)
        g_loss = grounding_loss(logits, chunk["labels"])
        p_loss = pointer_loss(pointer_features(logits, chunk["geom"], self.grid.n_cameras), chunk["true_pointer"])
        loss = g_loss + POINTER_WEIGHT * p_loss
        return loss, {"loss": loss.item(), "grounding_loss": g_loss.item(), "pointer_l1": p_loss.item()}

    def loss_on_cache(self, cache, idx: torch.Tensor, teacher: bool) -> tuple[torch.Tensor, dict]:
        """The head's loss on cached backbone outputs (``--head-cache``); ``teacher``: the share
        ``teacher_forcing`` of samples reads the true pointer, as in :meth:`loss_on`."""
        pointer = cache.pointer[idx]
        if teacher and self.cfg.teacher_forcing > 0:
            use = torch.from_numpy(self.rng.random(len(idx)) < self.cfg.teacher_forcing).to(self.device)
            pointer = torch.where(use[:, None, None, None], cache.true_pointer[idx], pointer)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            logits = self.model.action_head(cache.action_hidden[idx], pointer)
        loss, stats = self.action_loss(logits, cache.action[idx], cache.state[idx])
        stats["loss"] = loss.item()
        return loss, stats

    def _caches(self):
        """The training and held-out caches of ``--head-cache`` (built once, then reused from the run
        folder while the model, data and settings are the same): what the action head reads, or with
        ``--train-only grounding`` what the grounding heads read (in chunks of ``batch_size`` frames)."""
        from . import head_cache

        cfg = self.cfg
        grounding = cfg.train_only == "grounding"
        self.out.mkdir(parents=True, exist_ok=True)
        self.model.eval()  # the backbone as the policy runs it: no dropout in the cached outputs
        upstream = head_cache.weights_digest(self.model, skip=TRAINABLE["head"])  # the head feeds no cache
        meta = {"weights": upstream, "data": list(cfg.data), "frames": len(self.data), "seed": cfg.seed,
                "holdout_frac": cfg.holdout_frac, "shift_px": cfg.shift_px, "low_budget_frac": cfg.low_budget_frac,
                "uniform_frac": cfg.uniform_frac}  # fmt: skip
        if cfg.early_frac:
            meta["early_frac"] = cfg.early_frac
        if grounding:
            meta.update(kind="grounding", chunk=cfg.batch_size)
        else:
            meta["chunk"] = CACHE_BATCH  # one budget per forward pass: the batch shapes the sample
        caches = []
        for split, rows, n, augment in (("train", self.train_rows, cfg.head_cache, True),
                                        ("held-out", self.val_rows, 512, False)):  # fmt: skip
            if len(rows) == 0:  # no held-out episodes (holdout_frac 0): nothing to validate on
                caches.append(None)
                continue
            rng = np.random.default_rng([cfg.seed, 3, len(caches)])
            if split == "train":
                rows = np.unique(self.draw_rows(min(n, len(rows)), rng))  # sorted
            else:
                rows = np.sort(rng.choice(rows, min(n, len(rows)), replace=False))
            if grounding:
                rows = rng.permutation(rows)  # each chunk (one training batch) mixes episodes

            def forward(chunk, augment=augment, rng=rng):
                batch = self.data.batch(chunk)
                with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    return self.model(*self.model_inputs(batch, augment, rng)), batch

            def make(rows=rows, forward=forward, split=split):
                if grounding:
                    return head_cache.build_grounding(rows, forward, cfg.batch_size, f"cache grounding inputs ({split})")
                return head_cache.build(rows, forward, CACHE_BATCH, f"cache backbone outputs ({split})")

            path = self.out / f"{'grounding' if grounding else 'head'}_cache_{split}.safetensors"
            kind = head_cache.GroundingCache if grounding else head_cache.HeadCache
            parent = [Path(cfg.init).parent / path.name] if cfg.init else []  # the run the model came from
            cache = head_cache.load_or_build(path, {**meta, "split": split, "rows": len(rows)}, make, kind, parent)
            caches.append(cache.to(self.device))
        self.model.train()
        return caches

    def train_step(self) -> dict:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step)
        if self.cfg.train_only == "grounding" and self.cache is not None:
            chunks = self.cache.chunks
            loss, stats = self.grounding_loss_on_chunk(chunks[int(self.rng.integers(len(chunks)))])
        elif self.cache is not None:
            idx = torch.from_numpy(self.rng.integers(0, len(self.cache), self.cfg.batch_size)).to(self.device)
            loss, stats = self.loss_on_cache(self.cache, idx, teacher=True)
        else:
            loss, stats = self.loss_on(self.draw_rows(self.cfg.batch_size, self.rng), augment=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return stats

    @torch.no_grad()
    def validate(self, n: int = 256) -> dict:
        if len(self.val_rows) == 0:
            return {}
        if self.cfg.train_only == "grounding" and self.val_cache is not None:
            parts = [self.grounding_loss_on_chunk(c)[1] for c in self.val_cache.chunks]
            return {f"val_{k}": float(np.mean([p[k] for p in parts])) for k in parts[0]}
        if self.val_cache is not None:
            idx = torch.arange(len(self.val_cache), device=self.device)
            _, stats = self.loss_on_cache(self.val_cache, idx, teacher=False)
            return {f"val_{k}": v for k, v in stats.items()}
        rows = np.random.default_rng(self.cfg.seed + 2).choice(self.val_rows, min(n, len(self.val_rows)), replace=False)
        self.model.eval()
        rng_state = self.rng.bit_generator.state
        try:
            _, stats = self.loss_on(rows, augment=False)
        finally:
            self.rng.bit_generator.state = rng_state  # validation must not change the training stream
            self.model.train()
        return {f"val_{k}": v for k, v in stats.items()}

    # -- the run ---------------------------------------------------------------------------
    def _fit_budget(self, t0: float, first: int, bar) -> None:
        """Time steps ``first + BUDGET_PROBE``; then lower ``steps`` to what ``max_minutes`` leaves
        room for (5% kept for checkpoints and validation). With ``warmup >= BUDGET_PROBE[1]`` the
        schedule is fixed before it depends on ``steps``, so ``--steps N`` alone repeats the run."""
        now = time.perf_counter()
        if self.step - first == BUDGET_PROBE[0]:
            self._probe_t = now
            return
        per_step = (now - self._probe_t) / (BUDGET_PROBE[1] - BUDGET_PROBE[0])
        left = self.cfg.max_minutes * 60 - (now - t0)
        fits = self.step + max(0, int(0.95 * left / per_step))
        if fits < self.cfg.steps:
            self.cfg.steps = fits
            bar.total = fits
            bar.refresh()
            (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2))
            tqdm.write(f"max_minutes={self.cfg.max_minutes:g}: {per_step * 1000:.0f} ms/step -> training {fits} steps")

    def run(self) -> Path:
        from .checkpointing import load_training_state, save_training_state

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2))
        if self.cfg.resume and (self.out / "checkpoint").is_dir():
            load_training_state(self, self.out / "checkpoint")
        log = open(self.out / "train_log.jsonl", "a")
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train MiniVLA", unit="step")
        t0, frames = time.perf_counter(), 0
        first = self.step
        while self.step < self.cfg.steps:
            stats = self.train_step()
            frames += self.cfg.batch_size
            bar.update(1)
            if self.cfg.max_minutes and self.step - first in (BUDGET_PROBE[0], BUDGET_PROBE[1]):
                self._fit_budget(t0, first, bar)
            bar.set_postfix({k: f"{stats[k]:.3f}" for k in ("loss", "l1", "pointer_l1") if k in stats})
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                rec = {"step": self.step, "lr": self.lr_at(self.step - 1), **stats, **self.validate()}
                rec["samples_per_s"] = frames / (time.perf_counter() - t0)
                if self.cache is not None:
                    rec["head_cache_s"] = self.cache_seconds
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                save_training_state(self, self.out / "checkpoint")
        bar.close()
        log.close()
        self.model.config.extra = {
            "train_config": dataclasses.asdict(self.cfg),
            "episodes": len(self.data.episodes),
            "frames": len(self.data),
        }
        self.model.save_pretrained(self.out / "model")
        plot_training_curve(self.out / "train_log.jsonl", self.out / "train_curve.png")
        return self.out / "model"


def plot_training_curve(logs: Path | list[Path], png_path: Path) -> None:
    """Loss and held-out action error against step; several logs (training stages, each fine-tuning
    the previous one's model) are drawn end to end, with a line where each new stage starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [logs] if isinstance(logs, (str, Path)) else list(logs)
    recs, starts, offset = [], [], 0
    for log_path in logs:
        stage = [json.loads(line) for line in open(log_path)]
        if recs:
            starts.append(offset)
        recs += [{**r, "step": r["step"] + offset} for r in stage]
        offset += stage[-1]["step"] if stage else 0
    steps = [r["step"] for r in recs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    # the action loss, not the total: stages differ in what else they add (grounding), and a
    # grounding-only stage has none (a gap in the curve)
    axes[0].plot(steps, [r.get("action_loss", np.nan) for r in recs], label="train")
    if any("val_action_loss" in r for r in recs):
        axes[0].plot(steps, [r.get("val_action_loss", np.nan) for r in recs], label="held-out")
    axes[0].set(xlabel="step", ylabel="bin cross-entropy", title="action loss")
    axes[1].plot(steps, [r.get("val_l1_xyz", r.get("l1_xyz", np.nan)) for r in recs], label="xyz")
    axes[1].plot(steps, [r.get("val_l1_grip", r.get("l1_grip", np.nan)) for r in recs], label="gripper")
    axes[1].set(xlabel="step", ylabel="mean |error| (action units)", title="held-out action error", yscale="log")
    for ax in axes:
        for x in starts:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.legend()
        ax.grid(alpha=0.3)
    if starts:
        axes[0].set_title("action loss (dotted: a fine-tuning stage starts)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def holdout_split(data: FrameDataset, holdout_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of a run with this ``holdout_frac`` and ``seed``."""
    return data.split(holdout_frac, seed + 1)


def run_split(model: MiniVLA, data: FrameDataset, holdout_frac: float | None = None,
              seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The (training, held-out) frames of ``data`` in ``model``'s last training run: its ``holdout_frac``
    and ``seed``, read from the checkpoint's provenance unless given."""
    train_cfg = model.config.extra.get("train_config", {})
    holdout_frac = train_cfg.get("holdout_frac", 0.05) if holdout_frac is None else holdout_frac
    seed = train_cfg.get("seed", 0) if seed is None else seed
    return holdout_split(data, holdout_frac, seed)


def train(cfg: TrainConfig) -> Path:
    """Train MiniVLA as configured; returns the directory of the saved model."""
    return Trainer(cfg).run()
