"""Action readout: how a change at a layer's FFN output moves the policy's actions, state by state,
through the policy's own action head.

The atlas reads a value vector through the token basis (the unembedding, or the tied embedding):
exact to first order where the logits are a linear function of the last residual, as in OpenVLA. A
policy whose head is a network reads the same vector differently (MiniVLA: a post-LayerNorm block,
then Linear-GELU-LayerNorm, then the tied bin embeddings); there, a neuron whose value vector points
at a bin's embedding need not move that bin at all. And what a push does to an action depends on the
state: the same logit shift lengthens a move where the policy is sure of its direction and drifts the
action where it is not. :class:`ActionReadout` measures the read instead: for every calibration state,
the Jacobian of the *expected action* (the bins' values weighted by their probabilities, one number
per action dimension) with respect to a change added to a layer's FFN output at the action positions,
and the expected action itself. A neuron's *effects* are those Jacobians applied to its value vector:
how far each action dimension moves, in each state, per unit of activation.
:func:`~arrcoc_steer.concepts.find_action_concept` ranks neurons by how well their effects match what a
word asks of each state's action (a longer move the way the arm already goes, for "fast").
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
FORMAT = "2"  # 1 (stop 17): logit Jacobians averaged over states; 2: expected-action Jacobians per state


@dataclass(frozen=True, eq=False)
class ActionReadout:
    """Per layer and state, ``d(expected action) / d(FFN output at the action positions)``.

    Attributes:
        jacobians: layer -> ``(n_states, p, d_model)``: the change of the expected action at action
            query ``p`` (one action dimension each in MiniVLA and OpenVLA) per unit change added to
            the layer's FFN output at every action position, in each state.
        actions: ``(n_states, p)`` the expected action of each state, unsteered: what "a longer move
            the way the arm already goes" is measured against.
        values: ``(n_bins,)`` the action value each bin decodes to (normalised units, e.g. -1..1).
        model: the layout the readout was measured on.
    """

    jacobians: dict[int, torch.Tensor]
    actions: torch.Tensor
    values: torch.Tensor
    model: ModelRef | None = None

    def __post_init__(self):
        if not self.jacobians:
            raise ConfigError("ActionReadout.jacobians is empty")
        actions = torch.as_tensor(self.actions).detach().float()
        if actions.dim() != 2 or not len(actions):
            raise ConfigError(f"ActionReadout.actions must be (n_states, p), got {tuple(actions.shape)}")
        jacobians = {}
        for layer, j in self.jacobians.items():
            j = torch.as_tensor(j).detach().float()
            if j.dim() != 3 or j.shape[:2] != actions.shape:
                raise ConfigError(f"ActionReadout layer {layer}: the Jacobian must be ({len(actions)} states, "
                                  f"{actions.shape[1]} action dims, d_model), got {tuple(j.shape)}")  # fmt: skip
            jacobians[int(layer)] = j
        if not all(torch.isfinite(t).all() for t in (actions, *jacobians.values())):
            raise ConfigError("ActionReadout contains NaN or inf")
        object.__setattr__(self, "jacobians", jacobians)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "values", torch.as_tensor(self.values, dtype=torch.float32).flatten())

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.jacobians))

    @property
    def n_states(self) -> int:
        return self.actions.shape[0]

    @property
    def n_positions(self) -> int:
        return self.actions.shape[1]

    @classmethod
    def fit(cls, model: nn.Module, inputs: Iterable, logits: Callable[[nn.Module, object], torch.Tensor],
            layers: Sequence[int] | None = None, *, positions: str = "action",
            values: torch.Tensor | Sequence[float] | None = None, progress: bool = False) -> ActionReadout:  # fmt: skip
        """Measure the Jacobian in every state of ``inputs``: one batched backward pass of ``p``
        outputs per state (MiniVLA, last layer: ~0.05 s per state on 2 CPU cores).

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

        bins = _default_values(model, values)
        jacobians: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
        actions = []
        remove = [roles.track(model)] if positions != "all" and not roles.own else []
        try:
            remove += [adapter.module(f"layers.{l}.mlp.post").register_forward_hook(add(l)).remove for l in layers]
            for item in tqdm(inputs, desc="action readout", disable=not progress, leave=False):
                out = _action_logits(logits(model, item))
                bins = _bin_values(bins, out)
                expected = out.float().softmax(-1) @ bins.to(out.device)  # (p,)
                eye = torch.eye(len(expected), device=out.device)
                grads = torch.autograd.grad(expected, [deltas[l] for l in layers], grad_outputs=eye,
                                            is_grads_batched=True)  # fmt: skip
                for l, g in zip(layers, grads):
                    jacobians[l].append(g.detach().float().cpu())
                actions.append(expected.detach().cpu())
        finally:
            for r in remove:
                r()
        if not actions:
            raise ConfigError("ActionReadout.fit needs at least one input")
        return cls({l: torch.stack(js) for l, js in jacobians.items()}, torch.stack(actions), bins, ModelRef.of(adapter))

    def check_states(self, actions: torch.Tensor, atol: float = 1e-3) -> None:
        """Raise unless ``actions`` (the expected actions of some states, e.g. from
        :func:`expected_actions`) are this readout's: a per-state target is only meaningful on the
        states the Jacobians were measured at."""
        actions = torch.as_tensor(actions).float().cpu()
        if actions.shape != self.actions.shape or not torch.allclose(actions, self.actions, atol=atol):
            raise ConfigError(f"these {tuple(actions.shape)} expected actions are not the readout's "
                              f"{tuple(self.actions.shape)} states: give the observations it was fitted on, in the "
                              f"same order (or fit it again on these)")  # fmt: skip

    def effects(self, model: nn.Module | Adapter, layer: int) -> torch.Tensor:
        """``(d_ff, n_states, p)``: how far each neuron moves each state's expected action per unit
        of activation (first order)."""
        adapter = model if isinstance(model, Adapter) else Adapter(model)
        if self.model is not None:
            self.model.check(ModelRef.of(adapter), what="action readout")
        if layer not in self.jacobians:
            raise SteeringError(f"this readout was measured at layers {list(self.layers)}, not {layer}; "
                                f"fit one with layers=[{layer}]")
        values = adapter.value_vectors(layer).float()  # (F, d)
        return torch.einsum("spd,fd->fsp", self.jacobians[layer], values)

    # ------------------------------------------------------------------------ saving/loading
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"kind": KIND, "format": FORMAT,
                "model": json.dumps(vars(self.model) if self.model is not None else None)}  # fmt: skip
        tensors = {f"layer.{l}.jacobian": j.contiguous() for l, j in self.jacobians.items()}
        save_file({**tensors, "actions": self.actions.contiguous(), "values": self.values.contiguous()}, str(path), meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ActionReadout:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != KIND:
                raise CheckpointError(f"{path} is not an action readout (its kind is {meta.get('kind')!r})")
            if meta.get("format", "1") != FORMAT:
                raise CheckpointError(f"{path} is an action readout of format {meta.get('format', '1')}, this version "
                                      f"reads format {FORMAT}: delete it and fit it again (seconds)")  # fmt: skip
            jacobians = {int(k.split(".")[1]): f.get_tensor(k) for k in f.keys() if k.startswith("layer.")}
            actions, values = f.get_tensor("actions"), f.get_tensor("values")
        model = json.loads(meta.get("model", "null"))
        return cls(jacobians, actions, values, ModelRef(**model) if model else None)


@torch.no_grad()
def expected_actions(model: nn.Module, inputs: Iterable, logits: Callable[[nn.Module, object], torch.Tensor], *,
                     values: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:  # fmt: skip
    """``(n_states, p)`` each input's expected action (the bins' values weighted by their
    probabilities), as :meth:`ActionReadout.fit` records it; ``logits`` and ``values`` as there. Run
    on the same states with a modified instruction, the difference is what the modifier means to the
    policy, state by state (:class:`~arrcoc_steer.concepts.PromptMeaning`)."""
    bins = _default_values(model, values)
    actions = []
    for item in inputs:
        out = _action_logits(logits(model, item))
        bins = _bin_values(bins, out)
        actions.append((out.float().softmax(-1) @ bins.to(out.device)).cpu())
    if not actions:
        raise ConfigError("expected_actions needs at least one input")
    return torch.stack(actions)


def _default_values(model: nn.Module, values) -> torch.Tensor | None:
    if values is None:
        values = getattr(getattr(model, "action_tokenizer", None), "centers", None)
    return None if values is None else torch.as_tensor(values, dtype=torch.float32).flatten()


def _action_logits(out: torch.Tensor) -> torch.Tensor:
    out = out[0] if out.dim() == 3 and len(out) == 1 else out
    if out.dim() != 2:
        raise ConfigError(f"logits(model, item) must give (1, p, n_bins) or (p, n_bins), got {tuple(out.shape)}")
    return out


def _bin_values(bins: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    bins = torch.linspace(-1, 1, out.shape[-1]) if bins is None else bins
    if len(bins) != out.shape[-1]:
        raise ConfigError(f"{len(bins)} bin values for {out.shape[-1]} logits per action dim")
    return bins
