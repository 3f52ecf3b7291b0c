"""Activation steering: clamp, add to or scale FFN neurons, or add residual directions, in every call.

The paper's rule (Häon et al., CoRL 2025, arXiv 2509.00328): clamp the chosen neurons' activations
(the input of the FFN output projection, point ``layers.{i}.mlp.post``) to a constant ``alpha`` at
every token position of every forward call — prefill, each action-token decode step, every env
step. Here an :class:`Intervention` (a small frozen dataclass) says which neurons, how
(``clamp`` / ``add`` / ``scale``), how strongly (``alpha`` in raw units, or ``calibrated``: in
multiples of each neuron's own activation scale from :func:`calibrate`, because raw alpha does not
transfer between models) and where (``all`` / ``text`` / ``image`` / ``action`` positions).
A :class:`ResidualDirection` (the mean residual-stream difference between contrastive prompts,
"... quickly" minus "... slowly") is the second steering method, added at ``layers.{i}.resid_post``;
a :class:`ResidualMap` is its first-order form, a linear map fitted on paired prompts, for effects
that depend on the state (speed: a longer action along whichever way the arm is already going).

A :class:`Steerer` applies any number of them for as long as its ``with`` block lasts, across every
forward call, and removes everything it attached on exit — also when the block raises. It counts
the token positions each intervention changed and raises :class:`~arrcoc_steer.errors.SteeringError`
when one never fired. Two backends give identical outputs: ``"nnsight"`` (a persistent
``Envoy.edit`` replayed on every call) and ``"hooks"`` (plain torch forward hooks on the same
modules, the deployment fast path, which also survives ``torch.compile``).

>>> from arrcoc_steer.models.tiny import tiny_model, example_inputs
>>> model = tiny_model("llama"); x = example_inputs(model)
>>> with Steerer(model, [Intervention(((0, 5), (1, 7)), mode="clamp", alpha=4.0)]) as steer:
...     out = model(**x)
>>> steer.counts  # token positions changed, per intervention (2 layers x 8 tokens)
{'intervention 0': 16}
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .concepts import ConceptSet, ModelRef
from .errors import CheckpointError, ConfigError, SteeringError
from .models.adapters import Adapter, ModelSpec

MODES = ("clamp", "add", "scale")
UNITS = ("raw", "calibrated")
POSITIONS = ("all", "text", "image", "action", "proprio")
BACKENDS = ("hooks", "nnsight")


def _choice(owner: str, field_name: str, value, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{owner}.{field_name} must be one of {', '.join(valid)}; got {value!r}")


def _finite(owner: str, field_name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}.{field_name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Intervention:
    """Set FFN neurons ``(layer, neuron)`` at ``layers.{layer}.mlp.post`` in every forward call.

    Attributes:
        neurons: ``(layer, neuron)`` pairs.
        mode: ``"clamp"`` (activation := alpha, the paper's rule), ``"add"`` (+= alpha) or
            ``"scale"`` (*= alpha).
        alpha: the strength.
        unit: ``"raw"`` activation units, or ``"calibrated"``: alpha times each neuron's own
            scale (e.g. its 99th-percentile |activation|, from :func:`calibrate`).
        positions: token positions acted on: ``"all"``, ``"text"``, ``"image"``, ``"action"``
            (or ``"proprio"`` where the model reports it).
        name: label in counts and errors.
        model: layout the neuron indices belong to (checked against the steered model).
    """

    neurons: tuple[tuple[int, int], ...]
    mode: str = "clamp"
    alpha: float = 1.0
    unit: str = "raw"
    positions: str = "all"
    name: str = ""
    model: ModelRef | None = field(default=None, compare=False)

    def __post_init__(self):
        neurons = tuple(sorted({(int(l), int(n)) for l, n in self.neurons}))
        if not neurons:
            raise ConfigError("Intervention.neurons is empty")
        if any(l < 0 or n < 0 for l, n in neurons):
            raise ConfigError(f"Intervention.neurons has a negative index: {neurons}")
        object.__setattr__(self, "neurons", neurons)
        object.__setattr__(self, "alpha", _finite("Intervention", "alpha", self.alpha))
        _choice("Intervention", "mode", self.mode, MODES)
        _choice("Intervention", "unit", self.unit, UNITS)
        _choice("Intervention", "positions", self.positions, POSITIONS)
        if self.mode == "scale" and self.unit == "calibrated":
            raise ConfigError("Intervention: mode='scale' multiplies by alpha, so unit must be 'raw'")

    @classmethod
    def from_concept(cls, concept: ConceptSet, alpha: float, *, mode: str = "clamp", unit: str = "raw",
                     positions: str = "all") -> Intervention:
        """Act on every neuron of ``concept`` (``concept.cluster(i)`` for one cluster)."""
        return cls(concept.neurons, mode, alpha, unit, positions, concept.name, concept.model)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({l for l, _ in self.neurons}))

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(f"layers.{l}.mlp.post" for l in self.layers)


@dataclass(frozen=True, eq=False)
class ResidualDirection:
    """Add ``strength * vectors[layer]`` to the residual stream after each listed block.

    Attributes:
        vectors: layer -> ``(d_model,)`` direction (from :meth:`from_contrast`, or your own).
        strength: multiplier; 1.0 adds the full mean contrast difference.
        positions: token positions acted on, as for :class:`Intervention`.
        name: label in counts and errors.
    """

    vectors: dict[int, torch.Tensor]
    strength: float = 1.0
    positions: str = "all"
    name: str = ""
    model: ModelRef | None = None

    def __post_init__(self):
        if not self.vectors:
            raise ConfigError("ResidualDirection.vectors is empty")
        object.__setattr__(self, "strength", _finite("ResidualDirection", "strength", self.strength))
        _choice("ResidualDirection", "positions", self.positions, POSITIONS)
        vectors = {int(l): torch.as_tensor(v).detach().flatten() for l, v in self.vectors.items()}
        if any(not torch.isfinite(v).all() for v in vectors.values()):
            raise ConfigError("ResidualDirection.vectors contain NaN or inf")
        object.__setattr__(self, "vectors", vectors)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.vectors))

    def with_strength(self, strength: float) -> ResidualDirection:
        return replace(self, strength=strength)

    def top_layers(self, k: int = 1) -> ResidualDirection:
        """Keep the ``k`` layers where the contrast is largest: where the prompts' difference has
        reached the chosen positions. (In MiniVLA a modifier reaches the action queries only in the
        last layer: their contrast norm is 0.04-0.07 in layers 0-4 and 3.7 in layer 5.)"""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.vectors):
            raise ConfigError(f"top_layers: k must be an int in 1..{len(self.vectors)} (the direction's "
                              f"layers {list(self.layers)}), got {k!r}")
        norms = {l: float(v.norm()) for l, v in self.vectors.items()}
        keep = sorted(norms, key=lambda l: (-norms[l], l))[:k]
        return replace(self, vectors={l: self.vectors[l] for l in keep})

    @classmethod
    @torch.no_grad()
    def from_contrast(cls, model: nn.Module, positive: Sequence, negative: Sequence,
                      layers: Iterable[int], *, strength: float = 1.0, positions: str = "all",
                      normalize: bool = False, run: Callable | None = None, tokenizer=None,
                      name: str = "") -> ResidualDirection:
        """Mean block output on ``positive`` minus that on ``negative`` prompts, per layer.

        Prompts are strings (tokenized with ``tokenizer`` or ``model.tokenizer``), dicts of forward
        keyword arguments, or anything ``run(model, prompt)`` can execute. Means are taken over
        the chosen ``positions`` of every prompt. ``normalize`` makes each vector unit length
        (then ``strength`` is in residual-norm units).
        """
        adapter = Adapter(model)
        layers = [adapter.spec.check_layer(l) for l in layers]
        run = run or _default_runner(model, tokenizer)
        pos = _mean_residual(adapter, positive, layers, positions, run)
        neg = _mean_residual(adapter, negative, layers, positions, run)
        vectors = {l: pos[l] - neg[l] for l in layers}
        if normalize:
            vectors = {l: v / v.norm().clamp_min(1e-12) for l, v in vectors.items()}
        return cls(vectors, strength, positions, name or "contrast", ModelRef.of(adapter))

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        meta = {"strength": str(self.strength), "positions": self.positions, "name": self.name}
        save_file({f"layer.{l}": v.contiguous().cpu() for l, v in self.vectors.items()}, str(path), meta)

    @classmethod
    def load(cls, path: str | Path) -> ResidualDirection:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("kind") == "map":
                raise CheckpointError(f"{path} holds a residual map, not a direction (load it with ResidualMap.load)")
            vectors = {int(k.split(".")[1]): f.get_tensor(k) for k in f.keys()}
        return cls(vectors, float(meta.get("strength", 1.0)), meta.get("positions", "all"), meta.get("name", ""))


@dataclass(frozen=True, eq=False)
class ResidualMap:
    """Add ``strength * (x @ A + b)`` to the residual stream ``x`` after each listed block: a linear
    map, fitted on paired prompts, from activations under one prompt to their change under another.

    A mean-difference :class:`ResidualDirection` adds the same vector in every state. Where a
    modifier's effect depends on the state it does not transfer: in MiniVLA "quickly" lengthens
    the action along whichever way the arm is going, and a fixed vector instead pushes every action
    the same way. The map carries the dependence (its first-order fit; ``A = 0`` is the direction).

    Attributes:
        maps: layer -> ``(A (p, d, d), b (p, d))``: ``p = 1``, one map for every chosen position, or
            one per position when each call has the same ``p`` chosen positions (MiniVLA's 7 action
            queries, each one action dimension).
        strength: multiplier; 1.0 moves activations by the fitted change (0.5 half-way).
        positions: token positions acted on (as fitted).
        name: label in counts and errors.
    """

    maps: dict[int, tuple[torch.Tensor, torch.Tensor]]
    strength: float = 1.0
    positions: str = "all"
    name: str = ""
    model: ModelRef | None = None

    def __post_init__(self):
        if not self.maps:
            raise ConfigError("ResidualMap.maps is empty")
        object.__setattr__(self, "strength", _finite("ResidualMap", "strength", self.strength))
        _choice("ResidualMap", "positions", self.positions, POSITIONS)
        maps = {}
        for layer, (a, b) in self.maps.items():
            a, b = torch.as_tensor(a).detach().float(), torch.as_tensor(b).detach().float()
            a, b = (a[None] if a.dim() == 2 else a), (b[None] if b.dim() == 1 else b)
            if a.dim() != 3 or a.shape[1] != a.shape[2] or b.shape != (a.shape[0], a.shape[2]):
                raise ConfigError(f"ResidualMap layer {layer}: A must be (p, d, d) and b (p, d), got "
                                  f"{tuple(a.shape)} and {tuple(b.shape)}")
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise ConfigError(f"ResidualMap layer {layer} contains NaN or inf")
            maps[int(layer)] = (a, b)
        object.__setattr__(self, "maps", maps)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.maps))

    def with_strength(self, strength: float) -> ResidualMap:
        return replace(self, strength=strength)

    @classmethod
    @torch.no_grad()
    def fit(cls, model: nn.Module, source: Sequence, target: Sequence, layers: Iterable[int], *,
            positions: str = "all", per_position: bool = False, ridge: float = 0.05, strength: float = 1.0,
            run: Callable | None = None, tokenizer=None, name: str = "") -> ResidualMap:
        """Ridge regression of (activation under ``target``) - (activation under ``source``) on the
        ``source`` activation, prompt by prompt (``source[i]`` and ``target[i]`` differ only in
        what is contrasted, e.g. the instruction with and without "quickly").

        ``per_position``: one map per chosen position (each call must choose the same number).
        ``ridge``: the penalty as a fraction of the mean eigenvalue of the source covariance.
        """
        if len(source) != len(target) or not len(source):
            raise ConfigError(f"ResidualMap.fit needs paired prompts, got {len(source)} source and {len(target)} target")
        if not ridge > 0:
            raise ConfigError(f"ResidualMap.fit: ridge must be > 0, got {ridge!r}")
        adapter = Adapter(model)
        layers = [adapter.spec.check_layer(l) for l in layers]
        run = run or _default_runner(model, tokenizer)
        pairs = _paired_residuals(adapter, source, target, layers, positions, run, per_position)
        maps = {l: _ridge(x, change, ridge) for l, (x, change) in pairs.items()}
        return cls(maps, strength, positions, name or "map", ModelRef.of(adapter))

    @torch.no_grad()
    def score(self, model: nn.Module, source: Sequence, target: Sequence, *, run: Callable | None = None,
              tokenizer=None) -> dict[int, torch.Tensor]:
        """Per layer, the share of the change's variance the map explains on these pairs (R^2 per
        position, ``(p,)``); score it on pairs it was not fitted on. 0: no better than the mean
        change, i.e. than a :class:`ResidualDirection`."""
        adapter = Adapter(model)
        run = run or _default_runner(model, tokenizer)
        per_position = next(iter(self.maps.values()))[0].shape[0] > 1
        pairs = _paired_residuals(adapter, source, target, self.layers, self.positions, run, per_position)
        out = {}
        for l, (a, b) in self.maps.items():
            x, change = pairs[l]
            residual = change - (torch.einsum("npd,pde->npe", x, a) + b)
            spread = (change - change.mean(0)).pow(2).sum((0, 2)).clamp_min(1e-12)
            out[l] = 1 - residual.pow(2).sum((0, 2)) / spread
        return out

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        meta = {"kind": "map", "strength": str(self.strength), "positions": self.positions, "name": self.name}
        tensors = {f"layer.{l}.{k}": t.contiguous().cpu()
                   for l, (a, b) in self.maps.items() for k, t in (("A", a), ("b", b))}
        save_file(tensors, str(path), meta)

    @classmethod
    def load(cls, path: str | Path) -> ResidualMap:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != "map":
                raise CheckpointError(f"{path} is not a residual map (load it with ResidualDirection.load)")
            layers = sorted({int(k.split(".")[1]) for k in f.keys()})
            maps = {l: (f.get_tensor(f"layer.{l}.A"), f.get_tensor(f"layer.{l}.b")) for l in layers}
        return cls(maps, float(meta.get("strength", 1.0)), meta.get("positions", "all"), meta.get("name", ""))


def load_steer(path: str | Path) -> ResidualDirection | ResidualMap:
    """A residual direction or map file, whichever ``path`` holds."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        kind = (f.metadata() or {}).get("kind")
    return ResidualMap.load(path) if kind == "map" else ResidualDirection.load(path)


def _ridge(x: torch.Tensor, d: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``, ``d`` (n, p, dim) -> per position ``A`` (p, dim, dim), ``b`` (p, dim) minimising
    ``|x A + b - d|^2 + lam |A|^2``, ``lam`` = ridge x the mean eigenvalue of x's covariance."""
    x, d = x.double(), d.double()
    mx, md = x.mean(0), d.mean(0)
    xc, dc = x - mx, d - md
    a = []
    for i in range(x.shape[1]):
        cov = xc[:, i].T @ xc[:, i]
        lam = ridge * float(torch.trace(cov)) / cov.shape[0] + 1e-12
        a.append(torch.linalg.solve(cov + lam * torch.eye(cov.shape[0], dtype=cov.dtype), xc[:, i].T @ dc[:, i]))
    a = torch.stack(a)
    b = md - torch.einsum("pd,pde->pe", mx, a)
    return a.float(), b.float()


# ------------------------------------------------------------------------------ calibration
@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-neuron activation scale ``(n_layers, d_ff)``: the ``q`` quantile of |activation|."""

    scales: torch.Tensor
    q: float
    positions: str
    n_tokens: int
    model: ModelRef

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        meta = dict(q=str(self.q), positions=self.positions, n_tokens=str(self.n_tokens),
                    arch=self.model.arch, n_layers=str(self.model.n_layers), d_ff=str(self.model.d_ff))
        save_file({"scales": self.scales.contiguous().cpu()}, str(path), meta)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if "scales" not in f.keys() or "q" not in meta:
                raise CheckpointError(f"{path} is not a calibration file (no 'scales' / 'q')")
            scales = f.get_tensor("scales")
        model = ModelRef(meta["arch"], int(meta["n_layers"]), int(meta["d_ff"]))
        return cls(scales, float(meta["q"]), meta["positions"], int(meta["n_tokens"]), model)


@torch.no_grad()
def calibrate(model: nn.Module, inputs: Iterable, *, q: float = 0.99, positions: str = "all",
              run: Callable | None = None, tokenizer=None, max_tokens: int = 16384,
              seed: int = 0) -> Calibration:
    """Each neuron's ``q`` quantile of |activation| at ``layers.{i}.mlp.post`` over ``inputs``.

    ``inputs`` are prompts as for :meth:`ResidualDirection.from_contrast`. At most
    ``max_tokens`` token positions per layer are kept (a uniform random subset beyond that).
    """
    _choice("calibrate", "positions", positions, POSITIONS)
    if not 0 < q <= 1:
        raise ConfigError(f"calibrate.q must be in (0, 1], got {q!r}")
    adapter = Adapter(model)
    spec, run = adapter.spec, run or _default_runner(model, tokenizer)
    rows: dict[int, list[torch.Tensor]] = {l: [] for l in range(spec.n_layers)}
    gen = torch.Generator().manual_seed(seed)

    def keep(layer: int, acts: torch.Tensor, mask: torch.Tensor | None) -> None:
        a = acts.detach().abs().float().reshape(-1, spec.d_ff) if mask is None \
            else acts.detach().abs().float()[mask]
        rows[layer].append(a.cpu())
        if sum(len(r) for r in rows[layer]) > 2 * max_tokens:
            merged = torch.cat(rows[layer])
            rows[layer] = [merged[torch.randperm(len(merged), generator=gen)[:max_tokens]]]

    with _Capture(adapter, "mlp.post", range(spec.n_layers), positions, keep):
        for item in inputs:
            run(model, item)
    n_tokens = sum(len(r) for r in rows[0])
    if n_tokens == 0:
        raise SteeringError(f"calibrate saw no {positions!r} token positions in its inputs")
    scales = torch.stack([_quantile(torch.cat(rows[l])[:max_tokens], q) for l in range(spec.n_layers)])
    return Calibration(scales, q, positions, min(n_tokens, max_tokens), ModelRef.of(adapter))


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    k = max(1, min(len(x), math.ceil(q * len(x))))
    return x.kthvalue(k, dim=0).values  # (d_ff,)


# ---------------------------------------------------------------------------- random controls
def random_control(target: ConceptSet | Intervention, rng: int | np.random.Generator = 0, *,
                   d_ff: int | None = None) -> ConceptSet | Intervention:
    """A matched random control: as many neurons per layer, drawn elsewhere in the same layers.

    For an :class:`Intervention` everything else (mode, alpha, unit, positions) is kept, so the
    control differs from the real steer only in which neurons it touches.

    >>> real = Intervention(((3, 10), (3, 11), (5, 2)), alpha=2.0, model=ModelRef("bert", 6, 1536))
    >>> ctrl = random_control(real, rng=1)
    >>> [l for l, _ in ctrl.neurons], ctrl.alpha
    ([3, 3, 5], 2.0)
    """
    rng = np.random.default_rng(rng)
    model = target.model
    d_ff = d_ff or (model.d_ff if model is not None else None)
    if d_ff is None:
        raise ConfigError("random_control needs d_ff (neurons per layer): give d_ff= or a target "
                          "that records its model")
    taken = set(target.neurons)
    neurons = []
    for layer in sorted({l for l, _ in target.neurons}):
        n = sum(1 for l, _ in target.neurons if l == layer)
        free = np.setdiff1d(np.arange(d_ff), [j for l, j in taken if l == layer])
        if len(free) < n:
            raise ConfigError(f"layer {layer} has only {len(free)} other neurons for a control of {n}")
        neurons += [(layer, int(j)) for j in rng.choice(free, size=n, replace=False)]
    name = f"{target.name}~random"
    if isinstance(target, Intervention):
        return replace(target, neurons=tuple(neurons), name=name)
    return ConceptSet(name=name, neurons=tuple(neurons), model=target.model)


def random_direction(target: ResidualDirection | ResidualMap,
                     rng: int | np.random.Generator = 0) -> ResidualDirection | ResidualMap:
    """A matched random control for a residual direction: per layer, a uniformly random direction
    of the same norm; layers, strength and positions are kept. The draw is sign-symmetric, so one
    set of controls serves ``strength`` and ``-strength`` alike. For a :class:`ResidualMap`, every
    edit ``x A + b`` is turned by one random rotation per layer: each activation moves as far as
    under the map, in a random direction.

    >>> d = ResidualDirection({5: torch.ones(4)}, strength=2.0, positions="action")
    >>> r = random_direction(d, rng=0)
    >>> r.layers, r.strength, r.positions, round(float(r.vectors[5].norm()), 3)
    ((5,), 2.0, 'action', 2.0)
    """
    rng = np.random.default_rng(rng)
    if isinstance(target, ResidualMap):
        maps = {}
        for layer, (a, b) in target.maps.items():
            q, r = np.linalg.qr(rng.standard_normal((a.shape[-1], a.shape[-1])))
            rot = torch.as_tensor(q * np.sign(np.diag(r)), dtype=torch.float32)  # uniform (Haar) rotation
            maps[layer] = (a @ rot, b @ rot)
        return replace(target, maps=maps, name=f"{target.name or 'map'}~random")
    vectors = {}
    for layer in target.layers:
        v = target.vectors[layer]
        draw = torch.as_tensor(rng.standard_normal(v.numel()), dtype=torch.float32)
        vectors[layer] = (draw / draw.norm() * v.float().norm()).to(v.dtype)
    return replace(target, vectors=vectors, name=f"{target.name or 'direction'}~random")


# ---------------------------------------------------------------------------------- Steerer
class Steerer:
    """Apply interventions to every forward call of ``model`` while the ``with`` block lasts.

    Args:
        model: any model the adapters map (a transformers model, MiniVLA, a stand-in).
        interventions: :class:`Intervention` / :class:`ResidualDirection` / :class:`ResidualMap`
            objects (one or a list; several concepts at once are several interventions).
        calibration: needed by ``unit="calibrated"`` interventions.
        backend: ``"hooks"`` (torch forward hooks; fastest, default) or ``"nnsight"`` (a persistent
            ``Envoy.edit`` on the block list's parent, replayed on each of its calls).
        strict: raise :class:`SteeringError` on exit when an intervention never changed anything.

    Everything is validated before anything is attached. ``counts`` maps each intervention's name
    to the token positions it changed (summed over layers and calls).
    """

    def __init__(self, model: nn.Module, interventions, *, calibration: Calibration | None = None,
                 backend: str = "hooks", strict: bool = True):
        _choice("Steerer", "backend", backend, BACKENDS)
        self.model, self.backend, self.strict = model, backend, strict
        self.adapter = Adapter(model)
        single = (Intervention, ResidualDirection, ResidualMap)
        items = [interventions] if isinstance(interventions, single) else list(interventions)
        wrong = [type(i).__name__ for i in items if not isinstance(i, single)]
        if wrong:
            raise ConfigError(f"Steerer takes Intervention, ResidualDirection or ResidualMap objects, got {wrong}")
        if not items:
            raise ConfigError("Steerer needs at least one intervention")
        self.names = _unique_names(items)
        self.items = items
        self._roles = _Roles(self.adapter)
        self._edits = _plan(self.adapter, items, self.names, calibration, self._roles)
        self._detach: list[Callable[[], None]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Steerer:
        self.attach()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.detach()
        if exc_type is None and self.strict:
            counts = self.counts
            silent = [f"{name!r} (layers {list(item.layers)}, positions={item.positions!r})"
                      for name, item in zip(self.names, self.items) if counts[name] == 0]
            if silent:
                raise SteeringError(
                    f"{', '.join(silent)} never fired: no forward call reached those layers at such "
                    f"positions. Was the model called inside the with-block, and do its inputs have "
                    f"those positions? (Steerer(..., strict=False) allows a steer that never fires.)")

    def attach(self) -> None:
        """Install the interventions (``with Steerer(...)`` does this for you)."""
        if self._detach:
            raise SteeringError("this Steerer is already attached")
        for edit in self._edits:
            edit.reset()
        try:
            if self._roles.needs_ids(self._edits):
                self._detach.append(self._roles.track(self.model))
            attach = _attach_hooks if self.backend == "hooks" else _attach_nnsight
            self._detach.append(attach(self.adapter, self._edits))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove everything :meth:`attach` installed; safe to call twice."""
        while self._detach:
            self._detach.pop()()
        self._roles.clear()

    @property
    def counts(self) -> dict[str, int]:
        """Token positions changed per intervention so far (syncs with the device once)."""
        totals = dict.fromkeys(self.names, 0)
        for edit in self._edits:
            for name, n in edit.counts().items():
                totals[name] += n
        return totals


def steer(model: nn.Module, concept: ConceptSet, alpha: float, **kwargs) -> Steerer:
    """Shorthand: a :class:`Steerer` clamping every neuron of ``concept`` to ``alpha``.

    Keyword arguments go to :class:`Intervention` (mode, unit, positions) or :class:`Steerer`.
    """
    own = {k: kwargs.pop(k) for k in ("mode", "unit", "positions") if k in kwargs}
    return Steerer(model, Intervention.from_concept(concept, alpha, **own), **kwargs)


# ------------------------------------------------------------------------------- internals
def _unique_names(items) -> list[str]:
    names = []
    for i, item in enumerate(items):
        kind = {Intervention: "intervention", ResidualDirection: "direction", ResidualMap: "map"}[type(item)]
        base = item.name or f"{kind} {i}"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base} #{n}"
        names.append(name)
    return names


class _Roles:
    """Bool masks ``(b, t)`` of token roles for the forward call in progress."""

    def __init__(self, adapter: Adapter):
        self.adapter = adapter
        self.own = callable(getattr(adapter.model, "token_roles", None))
        self.input_ids: torch.Tensor | None = None
        self._cache: dict[str, torch.Tensor] | None = None
        self._memo: dict[str, tuple] = {}

    def needs_ids(self, edits) -> bool:
        return not self.own and any(op.positions != "all" for e in edits for op in e.ops)

    def check(self, positions: str, name: str) -> None:
        spec = self.adapter.spec
        if positions == "all" or self.own:
            return
        if positions == "image" and spec.image_token_id is None:
            raise SteeringError(f"{name}: positions='image', but {spec.arch} marks no image tokens "
                                f"(no image_token_id, no token_roles())")
        if positions == "action" and not spec.action_token_ids:
            raise SteeringError(f"{name}: positions='action', but {spec.arch} has no action tokens")
        if positions == "proprio":
            raise SteeringError(f"{name}: positions='proprio' needs a model with token_roles()")

    def track(self, model: nn.Module) -> Callable[[], None]:
        """Record each call's ``input_ids`` on the root module; returns the remover."""

        def pre_hook(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.input_ids = ids if isinstance(ids, torch.Tensor) else None
            self._cache = None

        handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def remove():
            handle.remove()
            self.clear()

        return remove

    def roles(self) -> dict[str, torch.Tensor]:
        if self.own:
            return self.adapter.token_roles()
        if self._cache is None:
            if self.input_ids is None:
                raise SteeringError("token positions need the call's input_ids, but the model was "
                                    "called without them (inputs_embeds?)")
            self._cache = self.adapter.token_roles(self.input_ids)
        return self._cache

    def mask(self, positions: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask (b, t, 1), number of selected positions)`` for this call, made once per call.

        Every layer and intervention of one forward call shares them. The role mask of the call
        keys the memo (held by it, so no later tensor can take its place unnoticed): a model's
        ``token_roles()`` must return new masks for each call, as MiniVLA does.
        """
        roles = self.roles()
        if positions not in roles:
            raise SteeringError(f"positions={positions!r}: the model reports only {sorted(roles)}")
        mask = roles[positions]
        memo = self._memo.get(positions)
        if memo is not None and memo[0] is mask and memo[1].device == like.device:
            return memo[1], memo[2]
        if mask.shape != like.shape[:-1]:
            raise SteeringError(f"token roles have shape {tuple(mask.shape)} but the activations are "
                                f"{tuple(like.shape)}: the model's roles do not describe this call")
        selected = mask.to(like.device)[..., None]
        self._memo[positions] = (mask, selected, selected.sum())
        return self._memo[positions][1:]

    def clear(self) -> None:
        self.input_ids = self._cache = None
        self._memo.clear()


@dataclass
class _Op:
    """One intervention's action at one point: ``x[..., idx] = x[..., idx] * scale + shift``."""

    name: str
    idx: torch.Tensor | None  # neuron indices, or None for a residual direction (all channels)
    scale: torch.Tensor | None  # None: clamp (no dependence on x)
    shift: torch.Tensor
    positions: str
    matrix: torch.Tensor | None = None  # (p, d, d): a residual map, x += x @ matrix + shift
    changed: int = 0  # positions changed, for unmasked applications
    masked: list = field(default_factory=list)  # device tensors of masked counts (no sync)


class _Edit:
    """Everything applied at one module (``kind`` "input": down projection, "output": block)."""

    def __init__(self, point: str, path: str, kind: str, ops: list[_Op], roles: _Roles):
        self.point, self.path, self.kind, self.ops, self.roles = point, path, kind, ops, roles

    def reset(self) -> None:
        for op in self.ops:
            op.changed, op.masked = 0, []

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            if len(op.masked) > 1:
                op.masked = [torch.stack(op.masked).sum()]
            masked = int(op.masked[0]) if op.masked else 0
            out[op.name] = out.get(op.name, 0) + op.changed + masked
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "output" or (torch.is_grad_enabled() and x.requires_grad):
            x = x.clone()  # the residual stream may be kept elsewhere; autograd may have saved x
        for op in self.ops:
            if op.matrix is not None:
                self._map(op, x)
                continue
            idx = op.idx if op.idx is not None else slice(None)
            if op.positions == "all":
                x[..., idx] = op.shift if op.scale is None else x[..., idx] * op.scale + op.shift
                op.changed += x[..., 0].numel()
                continue
            mask, selected = self.roles.mask(op.positions, x)  # (b, t, 1), shared by the call
            old = x[..., idx]
            new = op.shift if op.scale is None else old * op.scale + op.shift
            x[..., idx] = torch.where(mask, new, old)
            op.masked.append(selected)  # a device tensor: counting never syncs
            if len(op.masked) > 64:
                op.masked = [torch.stack(op.masked).sum()]
        return x

    def _map(self, op: _Op, x: torch.Tensor) -> None:
        """x[chosen] += x[chosen] @ A + b, with one (A, b) per chosen position of each row when p > 1."""
        sel = None if op.positions == "all" else self.roles.mask(op.positions, x)[0][..., 0]
        rows = x.reshape(-1, x.shape[-1]) if sel is None else x[sel]
        p = op.matrix.shape[0]
        if p > 1 and rows.shape[0] != x.shape[0] * p:
            raise SteeringError(f"{op.name}: the map has one matrix for each of {p} {op.positions!r} positions "
                                f"per sequence, but this call has {rows.shape[0]} for {x.shape[0]} sequences")
        grouped = rows.reshape(-1, p, rows.shape[-1])
        new = grouped + torch.einsum("npd,pde->npe", grouped, op.matrix) + op.shift
        if sel is None:
            x.copy_(new.reshape(x.shape))
        else:
            x[sel] = new.reshape(rows.shape)
        op.changed += rows.shape[0]


def _plan(adapter: Adapter, items, names, calibration, roles: _Roles) -> list[_Edit]:
    """Validate every intervention and group their ops per module, in execution order."""
    spec, ref = adapter.spec, ModelRef.of(adapter)
    ops: dict[tuple[int, int], list[_Op]] = {}
    for item, name in zip(items, names):
        if item.model is not None:
            item.model.check(ref, what=f"intervention {name!r}")
        roles.check(item.positions, name)
        if isinstance(item, Intervention):
            for layer in item.layers:
                ops.setdefault((layer, 0), []).append(_neuron_op(spec, item, name, layer, calibration))
        elif isinstance(item, ResidualMap):
            for layer, (a, b) in item.maps.items():
                _layer_or_error(spec, layer, name)
                if a.shape[-1] != spec.d_model:
                    raise SteeringError(f"{name}: layer {layer} map is {a.shape[-1]}-dimensional, the model's "
                                        f"residual stream {spec.d_model}")
                ops.setdefault((layer, 1), []).append(
                    _Op(name, None, None, item.strength * b, item.positions, matrix=item.strength * a))
        else:
            for layer, vector in item.vectors.items():
                _layer_or_error(spec, layer, name)
                if vector.numel() != spec.d_model:
                    raise SteeringError(f"{name}: layer {layer} direction has {vector.numel()} "
                                        f"channels, the model's residual stream {spec.d_model}")
                ops.setdefault((layer, 1), []).append(
                    _Op(name, None, torch.ones(()), item.strength * vector.float(), item.positions))
    device, dtype = _param(adapter.module(f"layers.0.mlp.post"))
    edits = []
    for (layer, kind), layer_ops in sorted(ops.items()):
        for op in layer_ops:  # move everything to the model once, not per call
            op.idx = op.idx.to(device) if op.idx is not None else None
            op.scale = op.scale.to(device, dtype) if op.scale is not None else None
            op.shift = op.shift.to(device, dtype)
            op.matrix = op.matrix.to(device, dtype) if op.matrix is not None else None
        point = f"layers.{layer}.{'mlp.post' if kind == 0 else 'resid_post'}"
        edits.append(_Edit(point, spec.path(point), "input" if kind == 0 else "output", layer_ops, roles))
    return edits


def _layer_or_error(spec: ModelSpec, layer: int, name: str) -> None:
    if not 0 <= layer < spec.n_layers:
        raise SteeringError(f"{name}: layer {layer} is out of range; {spec.arch} has "
                            f"{spec.n_layers} layers (0..{spec.n_layers - 1})")


def _neuron_op(spec: ModelSpec, item: Intervention, name: str, layer: int, calibration) -> _Op:
    _layer_or_error(spec, layer, name)
    idx = torch.tensor([n for l, n in item.neurons if l == layer])
    if int(idx.max()) >= spec.d_ff:
        raise SteeringError(f"{name}: neuron {int(idx.max())} of layer {layer} is out of range; "
                            f"{spec.arch} has {spec.d_ff} neurons per layer (0..{spec.d_ff - 1})")
    value = torch.full((len(idx),), item.alpha)
    if item.unit == "calibrated":
        if calibration is None:
            raise SteeringError(f"{name}: unit='calibrated' needs Steerer(..., calibration=calibrate(...))")
        calibration.model.check(ModelRef.of(spec), what="calibration")
        value = value * calibration.scales[layer, idx].float()
    if item.mode == "clamp":
        return _Op(name, idx, None, value, item.positions)
    if item.mode == "add":
        return _Op(name, idx, torch.ones(len(idx)), value, item.positions)
    return _Op(name, idx, value, torch.zeros(len(idx)), item.positions)


def _param(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


def _attach_hooks(adapter: Adapter, edits: list[_Edit]) -> Callable[[], None]:
    handles = []
    try:
        for edit in edits:
            module = adapter.model.get_submodule(edit.path)
            if edit.kind == "input":
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, edit=edit: (edit(args[0]), *args[1:])))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _args, out, edit=edit: _edit_output(edit, out)))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return lambda: [h.remove() for h in handles]


def _edit_output(edit: _Edit, out):
    if isinstance(out, torch.Tensor):
        return edit(out)
    return (edit(out[0]), *out[1:])  # blocks that return (hidden, extras...)


# ---------------------------------------------------------------------------- nnsight backend
_ROUTER = "_arrcoc_steer_router"


def _attach_nnsight(adapter: Adapter, edits: list[_Edit]) -> Callable[[], None]:
    """Wrap the block list's parent in nnsight, store the edits, and route its calls through it.

    nnsight instruments the wrapped modules by installing a controller ``forward`` on each
    (``__dict__`` entries); a snapshot of those entries is restored on detach, so the model is
    left exactly as it was. Each call of the parent runs ``envoy.trace(..., trace=False)``, which
    replays the stored edit around that one forward.
    """
    from nnsight import NNsight
    from nnsight.intervention.source import STATE

    parent_path = adapter.spec.layers.rpartition(".")[0]
    root = adapter.model.get_submodule(parent_path) if parent_path else adapter.model
    if _ROUTER in root.__dict__:
        raise SteeringError("another nnsight Steerer is active on this model; put all "
                            "interventions in one Steerer")
    snapshot = {m: {k: m.__dict__[k] for k in ("forward", STATE) if k in m.__dict__}
                for m in root.modules()}

    def restore():
        for module, saved in snapshot.items():
            for key in ("forward", STATE, _ROUTER):
                module.__dict__.pop(key, None)
            module.__dict__.update(saved)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BERT's `output` submodule is renamed E_output
            envoy = NNsight(root)
        _store_edit(envoy, [(_envoy_path(e.path, parent_path), e.kind, e) for e in edits])
        body = root.__dict__["forward"]

        def router(*args, **kwargs):
            return envoy.trace(*args, fn=body, trace=False, **kwargs)

        root.__dict__["forward"] = router
        root.__dict__[_ROUTER] = True
    except BaseException:
        restore()
        raise
    return restore


def _store_edit(envoy, plan) -> None:
    # nnsight records this block and replays it on every call; points are visited in order.
    with envoy.edit(inplace=True):
        for path, kind, edit in plan:
            point = envoy.get(path)
            if kind == "input":
                point.input = edit(point.input)
            else:
                point.output = _edit_output(edit, point.output)


def _envoy_path(path: str, parent_path: str) -> str:
    """Module path relative to the wrapped parent, spelled as nnsight exposes it (``E_output``)."""
    from nnsight.intervention.envoy import Envoy

    rel = path[len(parent_path) + 1:] if parent_path else path
    return ".".join(f"{Envoy.OVERLOAD_PREFIX}{part}" if not part.startswith("_")
                    and inspect.isdatadescriptor(getattr(Envoy, part, None)) else part
                    for part in rel.split("."))


# --------------------------------------------------------------------------- capture helpers
class _Capture:
    """Read (not change) activations at one kind of point during forward calls, via hooks."""

    def __init__(self, adapter: Adapter, kind: str, layers, positions: str, sink):
        self.adapter, self.kind, self.layers = adapter, kind, list(layers)
        self.positions, self.sink = positions, sink
        self.roles = _Roles(adapter)
        self.roles.check(positions, "capture")
        self._remove: list[Callable[[], None]] = []

    def __enter__(self):
        if self.positions != "all" and not self.roles.own:
            self._remove.append(self.roles.track(self.adapter.model))
        for layer in self.layers:
            module = self.adapter.module(f"layers.{layer}.{self.kind}")
            if self.kind == "mlp.post":
                h = module.register_forward_pre_hook(lambda _m, args, l=layer: self._see(l, args[0]))
            else:
                h = module.register_forward_hook(
                    lambda _m, _a, out, l=layer: self._see(l, out if isinstance(out, torch.Tensor) else out[0]))
            self._remove.append(h.remove)
        return self

    def _see(self, layer: int, x: torch.Tensor) -> None:
        mask = None if self.positions == "all" else self.roles.mask(self.positions, x)[0][..., 0]
        self.sink(layer, x, mask)

    def __exit__(self, *exc):
        while self._remove:
            self._remove.pop()()


def _mean_residual(adapter: Adapter, prompts, layers, positions, run) -> dict[int, torch.Tensor]:
    sums = {l: torch.zeros(adapter.spec.d_model, dtype=torch.float64) for l in layers}
    counts = dict.fromkeys(layers, 0)

    def add(layer, x, mask):
        x = x.detach().double()
        picked = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]
        sums[layer] += picked.sum(0).cpu()
        counts[layer] += len(picked)

    with _Capture(adapter, "resid_post", layers, positions, add):
        for prompt in prompts:
            run(adapter.model, prompt)
    if not all(counts.values()):
        raise SteeringError(f"from_contrast saw no {positions!r} positions in its prompts")
    return {l: (sums[l] / counts[l]).float() for l in layers}


def _residuals(adapter: Adapter, prompts, layers, positions, run, per_position: bool) -> dict[int, torch.Tensor]:
    """Every chosen position's block output, ``(n, p, d)``: p per call (``per_position``) or 1."""
    rows = {l: [] for l in layers}

    def add(layer, x, mask):
        x = x.detach().float().cpu()
        mask = None if mask is None else mask.cpu()
        if per_position:
            picked = [x[i] if mask is None else x[i][mask[i]] for i in range(len(x))]
            if len({len(r) for r in picked}) > 1 or (rows[layer] and len(picked[0]) != rows[layer][0].shape[1]):
                raise SteeringError(f"per_position maps need the same number of {positions!r} positions in "
                                    f"every call; got {sorted({len(r) for r in picked})}")
            rows[layer].append(torch.stack(picked))
        else:
            rows[layer].append((x.reshape(-1, x.shape[-1]) if mask is None else x[mask])[:, None])

    with _Capture(adapter, "resid_post", layers, positions, add):
        for prompt in prompts:
            run(adapter.model, prompt)
    if not all(rows.values()) or not all(sum(len(r) for r in v) for v in rows.values()):
        raise SteeringError(f"ResidualMap.fit saw no {positions!r} positions in its prompts")
    return {l: torch.cat(v) for l, v in rows.items()}


def _paired_residuals(adapter: Adapter, source, target, layers, positions, run,
                      per_position: bool) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the source activations and their change under the target prompts, pair by pair."""
    xs = _residuals(adapter, source, layers, positions, run, per_position)
    ys = _residuals(adapter, target, layers, positions, run, per_position)
    for l in layers:
        if xs[l].shape != ys[l].shape:
            raise SteeringError(f"ResidualMap: layer {l} chose {tuple(xs[l].shape)} source and "
                                f"{tuple(ys[l].shape)} target positions; the pairs must match")
    return {l: (xs[l], ys[l] - xs[l]) for l in layers}


def _default_runner(model: nn.Module, tokenizer) -> Callable:
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)

    def run(model, prompt):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise ConfigError("string prompts need a tokenizer (tokenizer=...) or run=...")
            device = next(model.parameters()).device
            return model(**{k: v.to(device) for k, v in tokenizer(prompt, return_tensors="pt").items()})
        if isinstance(prompt, dict):
            return model(**prompt)
        if isinstance(prompt, (tuple, list)):
            return model(*prompt)
        return model(prompt)

    return run
