"""Visual-token pruning for Hugging Face VLMs by ARR-COC relevance (LLaVA-style and Qwen2-VL).

ARR-COC is not tied to our policy: any VLM that splices image features into its language model's
input embeddings can keep only B of its image tokens, chosen by the same relevance.

``VisualTokenPruner(model, budget).prepare(inputs, images, instruction)`` does what the model's own
forward does before its language model -- image features from the vision tower and projector
(``get_image_features``), text embeddings, the features scattered onto the image placeholders -- then
keeps, in each sequence, the top-B image tokens by relevance (ties: earlier token first) and every
text token, preserving order:

* relevance: the allocator's balanced 16 x 16 cell map of each image (``RelevanceAllocator.
  relevance_maps``, within-image normalised ways of knowing + the three tensions), resized
  (bilinear, antialiased) to the image's token grid; or maps the caller passes.
* ``mode="keep"`` drops the rest (FastV / VisionZip style); ``mode="merge"`` first averages each
  dropped token into its most similar kept token of the same sequence (cosine of features), so
  no image content is discarded outright (ToMe style).
* Qwen2-VL: the kept tokens keep their original multimodal-RoPE (t, h, w) positions, computed on the
  full sequence by the model's ``get_rope_index``; the text after the image keeps its positions too.
  LLaVA's positions are 1-D and simply renumber.

The result feeds ``model(**pruned.kwargs)`` or ``model.generate(**pruned.kwargs)``: the language
model sees exactly B image tokens per sequence. Every sequence of a batch must hold the same number
of image tokens (same images sizes), so the pruned batch stays rectangular.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, UnknownNameError
from ..regions import check_budget

ARCHITECTURES = ("llava", "qwen2_vl")
MODES = ("keep", "merge")


@dataclass(frozen=True, eq=False)
class PrunedInputs:
    """Language-model inputs with B image tokens per sequence."""

    inputs_embeds: Any  # (b, L', d) torch tensor
    attention_mask: Any  # (b, L')
    position_ids: Any | None  # (3, b, L') for Qwen2-VL, else None
    kept: list  # per image: LongTensor of the kept token indices within that image
    budget: int

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model(...)`` or ``model.generate(...)``."""
        out = {"inputs_embeds": self.inputs_embeds, "attention_mask": self.attention_mask}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out


class VisualTokenPruner:
    """Keep (or merge down to) ``budget`` image tokens of a LLaVA-style or Qwen2-VL model."""

    def __init__(self, model, budget: int = 100, *, mode: str = "keep", allocator=None):
        self.arch = getattr(model.config, "model_type", type(model).__name__)
        if self.arch not in ARCHITECTURES:
            raise UnknownNameError("VLM architecture", self.arch, ARCHITECTURES)
        if mode not in MODES:
            raise UnknownNameError("pruning mode", mode, MODES)
        self.model, self.budget, self.mode = model, check_budget(budget), mode
        self._allocator = allocator

    @property
    def allocator(self):
        if self._allocator is None:
            from .allocating import RelevanceAllocator

            self._allocator = RelevanceAllocator()
        return self._allocator

    # -- the model's own pieces ------------------------------------------------------------------
    def image_features(self, inputs: Mapping[str, Any]) -> list:
        """Per image ``(n_i, d)`` features exactly as the model would splice them in."""
        m, cfg = self.model, self.model.config
        if self.arch == "llava":
            out = m.model.get_image_features(
                pixel_values=inputs["pixel_values"],
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            )
        else:
            out = m.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        return list(out.pooler_output)

    def token_grids(self, inputs: Mapping[str, Any], features: list) -> list[tuple[int, int]]:
        """``(rows, cols)`` of each image's token grid."""
        if self.arch == "llava":
            sides = [int(round(np.sqrt(len(f)))) for f in features]
            if any(s * s != len(f) for s, f in zip(sides, features)):
                raise ConfigError("LLaVA image features must form a square patch grid")
            return [(s, s) for s in sides]
        merge = self.model.config.vision_config.spatial_merge_size
        thw = inputs["image_grid_thw"].tolist()
        if any(t != 1 for t, _, _ in thw):
            raise ConfigError("only still images are supported (image_grid_thw with t == 1)")
        return [(h // merge, w // merge) for _, h, w in thw]

    def _positions(self, inputs: Mapping[str, Any], image_mask):
        if self.arch != "qwen2_vl":
            return None
        types = inputs.get("mm_token_type_ids")
        types = image_mask.int() if types is None else types
        pos, _ = self.model.model.get_rope_index(
            inputs["input_ids"], mm_token_type_ids=types, image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs.get("attention_mask"),
        )  # fmt: skip
        return pos  # (3, b, L)

    # -- relevance -------------------------------------------------------------------------------
    def token_relevance(self, grids, images=None, instruction=None, relevance=None) -> list:
        """Per image ``(rows * cols,)`` float scores from ``relevance`` maps or from ``images``."""
        import torch
        import torch.nn.functional as F

        if relevance is None:
            if images is None:
                raise ConfigError("VisualTokenPruner needs `images` (RGB uint8) or `relevance` maps per image")
            relevance = self.allocator.relevance_maps(images, instruction)
        if len(relevance) != len(grids):
            raise ConfigError(f"got {len(relevance)} relevance maps or images for {len(grids)} images in the inputs")
        scores = []
        for r, (h, w) in zip(relevance, grids):
            r = torch.as_tensor(np.asarray(r, np.float32))
            if r.ndim != 2 or not torch.isfinite(r).all():
                raise ConfigError(f"a relevance map must be a finite 2-D array, got shape {tuple(r.shape)}")
            scores.append(F.interpolate(r[None, None], size=(h, w), mode="bilinear", antialias=True).reshape(-1))
        return scores

    # -- pruning ---------------------------------------------------------------------------------
    def prepare(
        self,
        inputs: Mapping[str, Any],
        images: Sequence[np.ndarray] | np.ndarray | None = None,
        instruction: str | None = None,
        relevance: Sequence[np.ndarray] | None = None,
    ) -> PrunedInputs:
        """Prune ``inputs`` (a processor's output: input_ids, pixel_values, ...) to B image tokens."""
        import torch

        with torch.no_grad():
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask
            image_mask = ids == self.model.config.image_token_id  # (b, L)
            features = self.image_features(inputs)
            grids = self.token_grids(inputs, features)
            scores = self.token_relevance(grids, images, instruction, relevance)
            flat = torch.cat(features)  # (N, d), images in sequence order
            per_row = image_mask.sum(1)
            if flat.shape[0] != int(per_row.sum()) or len(set(per_row.tolist())) != 1:
                raise ConfigError(
                    f"image tokens per sequence {per_row.tolist()} must be equal and match the "
                    f"{flat.shape[0]} image features"
                )
            n = int(per_row[0])
            if self.budget > n:
                raise ConfigError(f"budget={self.budget} exceeds the {n} image tokens of each sequence")
            keep = _top_k_stable(torch.cat(scores).reshape(len(ids), n), self.budget)  # (b, n) bool
            rows = flat.reshape(len(ids), n, -1)
            if self.mode == "merge":
                rows = _merge_into_kept(rows, keep)

            embeds = self.model.get_input_embeddings()(ids)
            embeds = embeds.masked_scatter(image_mask[..., None], rows.to(embeds.dtype))
            positions = self._positions(inputs, image_mask)
            keep_seq = ~image_mask
            keep_seq[image_mask] = keep.reshape(-1)  # (b, L): text + kept image tokens
            length = int(keep_seq[0].sum())
            embeds = embeds[keep_seq].reshape(len(ids), length, -1)
            mask = mask[keep_seq].reshape(len(ids), length)
            if positions is not None:
                positions = positions[:, keep_seq].reshape(3, len(ids), length)
            offsets = np.cumsum([0] + [len(f) for f in features])
            kept = [torch.nonzero(keep.reshape(-1)[a:b]).reshape(-1) for a, b in zip(offsets[:-1], offsets[1:])]
        return PrunedInputs(embeds, mask, positions, kept, self.budget)

    def generate(self, inputs, images=None, instruction=None, relevance=None, **generate_kwargs):
        """``model.generate`` on the pruned inputs (returns only the new tokens, as with inputs_embeds)."""
        pruned = self.prepare(inputs, images, instruction, relevance)
        return self.model.generate(**pruned.kwargs, **generate_kwargs)


def _top_k_stable(scores, k: int):
    """Bool mask of the k highest scores per row; ties go to the earlier index (deterministic)."""
    import torch

    order = torch.sort(-scores, dim=1, stable=True).indices[:, :k]
    keep = torch.zeros_like(scores, dtype=torch.bool)
    return keep.scatter_(1, order, True)


def _merge_into_kept(rows, keep):
    """Average each dropped token into its most similar kept token of the same row (cosine)."""
    import torch
    import torch.nn.functional as F

    out = rows.clone()
    for i in range(len(rows)):  # one iteration per sequence, vectorised within it
        kept, dropped = rows[i][keep[i]], rows[i][~keep[i]]
        if len(dropped) == 0:
            continue
        target = (F.normalize(dropped, dim=-1) @ F.normalize(kept, dim=-1).T).argmax(1)  # (n_dropped,)
        total = kept.clone().index_add_(0, target, dropped)
        ones = torch.ones(len(dropped), 1, dtype=rows.dtype)
        count = torch.ones(len(kept), 1, dtype=rows.dtype).index_add_(0, target, ones)
        out[i][keep[i]] = total / count
    return out
