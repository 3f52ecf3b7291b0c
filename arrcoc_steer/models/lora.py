"""Low-rank adaptation (LoRA, Hu et al. 2021) of chosen linear layers of a frozen backbone.

``W x`` becomes ``W x + (alpha / r) B A x`` with ``B`` initialised to zero, so a freshly adapted
model computes exactly what the base model computed. The FFN output projections (whose columns are
the value vectors the neuron atlas reads) are left untouched by default, which keeps the neurons'
written semantics intact.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    # Expose the base layer's tensors so code that reads ``layer.weight`` sees the frozen weight.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scaling * self.lora_b @ self.lora_a


def apply_lora(module: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name ends with one of ``targets``; return names."""
    replaced = []
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear) and name.endswith(targets):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, LoRALinear(child, rank, alpha))
            replaced.append(name)
    return replaced
