"""Action readout: which action bins a change at a layer's FFN output promotes, through the policy's
own action head.

The atlas reads a value vector through the token basis (the unembedding, or the tied embedding):
exact to first order where the logits are a linear function of the last residual, as in OpenVLA. A
policy whose head is a network reads the same vector differently (MiniVLA: a post-LayerNorm block,
then Linear-GELU-LayerNorm, then the tied bin embeddings); there, a neuron whose value vector points
at a bin's embedding need not move that bin at all. :class:`ActionReadout` measures the read
instead: the Jacobian of the action logits with respect to a change added to a layer's FFN output
at the action positions, averaged over calibration states. A neuron's *action profile* is that
Jacobian applied to its value vector: how far each bin's logit moves, at each action query, per unit
of activation. :func:`~arrcoc_steer.concepts.find_action_concept` ranks neurons by their profiles.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .concepts import ModelRef
from .errors import CheckpointError, ConfigError, SteeringError
from .models.adapters import Adapter
from .steering import _Roles

KIND = "action-readout"


@dataclass(frozen=True, eq=False)
class ActionReadout:
    """Per layer, ``d(action logits) / d(FFN output at the action positions)``, averaged over states.

    Attributes:
        jacobians: layer -> ``(p, n_bins, d_model)``: the change of bin ``k``'s logit at action query
            ``p`` per unit change added to the layer's FFN output at every action position.
        values: ``(n_bins,)`` the action value each bin decodes to (normalised units, e.g. -1..1).
        n_states: how many states were averaged.
        model: the layout the readout was measured on.
    """

    jacobians: dict[int, torch.Tensor]
    values: torch.Tensor
    n_states: int = 0
    model: ModelRef | None = None

    def __post_init__(self):
        if not self.jacobians:
            raise ConfigError("ActionReadout.jacobians is empty")
        values = torch.as_tensor(self.values, dtype=torch.float32).flatten()
        jacobians = {}
        for layer, j in self.jacobians.items():
            j = torch.as_tensor(j).detach().float()
            if j.dim() != 3 or j.shape[1] != len(values):
                raise ConfigError(f"ActionReadout layer {layer}: the Jacobian must be (positions, {len(values)} "
                                  f"bins, d_model), got {tuple(j.shape)}")  # fmt: skip
            if not torch.isfinite(j).all():
                raise ConfigError(f"ActionReadout layer {layer} contains NaN or inf")
            jacobians[int(layer)] = j
        object.__setattr__(self, "jacobians", jacobians)
        object.__setattr__(self, "values", values)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.jacobians))

    @property
    def n_positions(self) -> int:
        return next(iter(self.jacobians.values())).shape[0]

    @classmethod
    def fit(cls, model: nn.Module, inputs: Iterable, logits: Callable[[nn.Module, object], torch.Tensor],
            layers: Sequence[int] | None = None, *, positions: str = "action",
            values: torch.Tensor | Sequence[float] | None = None, progress: bool = False) -> ActionReadout:  # fmt: skip
        """Average the Jacobian over ``inputs`` (one state each).

        Args:
            model: the policy.
            inputs: states, each passed to ``logits``.
            logits: ``logits(model, item)`` -> ``(1, p, n_bins)`` or ``(p, n_bins)`` action logits,
                with gradients (MiniVLA: ``model.action_logits(obs, instruction)``).
            layers: where to read (default: the last layer, the one the head sees directly).
            positions: the token positions a change is added to (the action queries).
            values: each bin's action value (default: ``model.action_tokenizer.centers`` when the
                model has one, else evenly spaced in -1..1).
        """
        adapter = Adapter(model)
        spec = adapter.spec
        layers = [spec.check_layer(l) for l in (layers if layers is not None else [spec.n_layers - 1])]
        roles = _Roles(adapter)
        roles.check(positions, "ActionReadout")
        param = next(model.parameters())
        deltas = {l: torch.zeros(spec.d_model, device=param.device, dtype=param.dtype, requires_grad=True)
                  for l in layers}  # fmt: skip

        def add(layer):
            def hook(_module, _args, out):
                if positions == "all":
                    return out + deltas[layer]
                mask, count = roles.mask(positions, out)
                if not count:
                    raise SteeringError(f"ActionReadout: a call with no {positions!r} positions")
                return out + mask.to(out.dtype) * deltas[layer]

            return hook

        sums: dict[int, torch.Tensor] = {}
        n = 0
        remove = [roles.track(model)] if positions != "all" and not roles.own else []
        try:
            remove += [adapter.module(f"layers.{l}.mlp.post").register_forward_hook(add(l)).remove for l in layers]
            for item in tqdm(inputs, desc="action readout", disable=not progress, leave=False):
                out = logits(model, item)
                out = out[0] if out.dim() == 3 and len(out) == 1 else out
                if out.dim() != 2:
                    raise ConfigError(f"logits(model, item) must give (1, p, n_bins) or (p, n_bins), got "
                                      f"{tuple(out.shape)}")  # fmt: skip
                eye = torch.eye(out.numel(), device=out.device, dtype=out.dtype).reshape(-1, *out.shape)
                grads = torch.autograd.grad(out, [deltas[l] for l in layers], grad_outputs=eye, is_grads_batched=True)
                for l, g in zip(layers, grads):
                    sums[l] = sums.get(l, 0) + g.detach().float().cpu().reshape(*out.shape, spec.d_model)
                n += 1
        finally:
            for r in remove:
                r()
        if not n:
            raise ConfigError("ActionReadout.fit needs at least one input")
        n_bins = next(iter(sums.values())).shape[1]
        if values is None:
            centers = getattr(getattr(model, "action_tokenizer", None), "centers", None)
            values = centers if centers is not None else torch.linspace(-1, 1, n_bins)
        return cls({l: s / n for l, s in sums.items()}, torch.as_tensor(values), n, ModelRef.of(adapter))

    def profiles(self, model: nn.Module | Adapter, layer: int) -> torch.Tensor:
        """``(d_ff, p, n_bins)``: each neuron's logit change per unit of activation, at every query."""
        adapter = model if isinstance(model, Adapter) else Adapter(model)
        if self.model is not None:
            self.model.check(ModelRef.of(adapter), what="action readout")
        if layer not in self.jacobians:
            raise SteeringError(f"this readout was measured at layers {list(self.layers)}, not {layer}; "
                                f"fit one with layers=[{layer}]")
        values = adapter.value_vectors(layer).float()  # (F, d)
        return torch.einsum("pkd,fd->fpk", self.jacobians[layer], values)

    # ------------------------------------------------------------------------ saving/loading
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"kind": KIND, "n_states": str(self.n_states),
                "model": json.dumps(vars(self.model) if self.model is not None else None)}  # fmt: skip
        tensors = {f"layer.{l}.jacobian": j.contiguous() for l, j in self.jacobians.items()}
        save_file({**tensors, "values": self.values.contiguous()}, str(path), meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ActionReadout:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != KIND:
                raise CheckpointError(f"{path} is not an action readout (its kind is {meta.get('kind')!r})")
            jacobians = {int(k.split(".")[1]): f.get_tensor(k) for k in f.keys() if k.startswith("layer.")}
            values = f.get_tensor("values")
        model = json.loads(meta.get("model", "null"))
        return cls(jacobians, values, int(meta.get("n_states", 0)), ModelRef(**model) if model else None)
