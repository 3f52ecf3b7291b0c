"""Actions as vocabulary tokens, as in OpenVLA: each action dimension is cut into 256 uniform bins
over [-1, 1], and bin ``k`` is the vocabulary token ``first_id + k``.

All dimensions share the same 256 tokens (OpenVLA's layout), so a language-model head tied to the
word embeddings predicts actions, and projecting an FFN value vector onto the token basis shows
words and action bins side by side.

>>> tok = ActionTokenizer(first_id=1)
>>> ids = tok.encode(np.array([[-1.0, 0.0, 0.57, 0, 0, 0, 1.0]]))
>>> ids[0].tolist()
[1, 129, 201, 129, 129, 129, 256]
>>> tok.describe(201)
'[bin 200: +0.57]'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ACTION_DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


@dataclass(frozen=True)
class ActionTokenizer:
    first_id: int = 1  # BERT's [unused0]
    n_bins: int = 256
    low: float = -1.0
    high: float = 1.0
    dims: tuple[str, ...] = ACTION_DIMS

    @property
    def token_ids(self) -> torch.Tensor:
        return torch.arange(self.first_id, self.first_id + self.n_bins)

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(self.low, self.high, self.n_bins + 1)
        return (edges[:-1] + edges[1:]) / 2

    def to_bins(self, actions: np.ndarray) -> np.ndarray:
        """Continuous actions (..., D) -> bin indices (..., D) in 0..n_bins-1."""
        a = np.clip(np.asarray(actions, np.float64), self.low, self.high)
        k = np.floor((a - self.low) / (self.high - self.low) * self.n_bins).astype(np.int64)
        return np.clip(k, 0, self.n_bins - 1)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        return self.to_bins(actions) + self.first_id

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        bins = np.clip(np.asarray(token_ids) - self.first_id, 0, self.n_bins - 1)
        return self.centers[bins].astype(np.float32)

    def is_action_token(self, token_id: int | torch.Tensor) -> bool | torch.Tensor:
        return (token_id >= self.first_id) & (token_id < self.first_id + self.n_bins)

    def describe(self, token_id: int) -> str | None:
        """Readable name of an action-bin token, or None for any other token."""
        if not self.is_action_token(int(token_id)):
            return None
        k = int(token_id) - self.first_id
        return f"[bin {k}: {self.centers[k]:+.2f}]"
