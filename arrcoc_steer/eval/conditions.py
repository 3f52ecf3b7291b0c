"""Conditions: what is done to the policy in an episode, as named, validated, serialisable specs.

Every condition is a small frozen dataclass with a ``kind`` and a ``name`` (the label in results and
file names; a readable default is derived from the fields). Specs are pure data -- YAML / JSON round
trip through :func:`condition_from_dict` / :meth:`Condition.to_dict` -- and files they name (concept
dictionaries, calibrations, residual directions) are loaded where the episode runs.

=================  =========================================================================
kind               what it does
=================  =========================================================================
``unsteered``      nothing: the baseline every other condition is paired against
``prompt``         appends a modifier to the instruction ("... quickly"), the prompting baseline
``concept``        clamps / adds / scales the neurons of named concepts at every forward call
``random_control`` the same, on random neurons matched in number per layer (seeded)
``residual``       adds a contrastive residual direction (or map) times ``strength``
``random_direction`` the same, along random directions of matched norm (seeded)
``closed_loop``    sets the strength of a concept / residual steer (or the policy's own knob)
                   at every step to hold a behaviour target (:mod:`arrcoc_steer.control`)
``budget``         a visual token budget spent by an allocator: relevance / uniform / random /
                   downsample (ARR-COC against the token-pruning baselines)
=================  =========================================================================

>>> c = Concept(concepts="concepts.yaml", concept="fast", alpha=4.0)
>>> c.name
'concept_fast_clamp4'
>>> condition_from_dict(c.to_dict()) == c
True
>>> [r.name for r in random_controls(c, n=2)]
['random_fast_clamp4_s0', 'random_fast_clamp4_s1']

A condition turns into a :class:`Runtime` for one episode (:meth:`Condition.runtime`): the hooks the
rollout calls -- instruction, observation, per-step keyword arguments, a steering context around the
episode, and feedback after every step.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..control import AlphaController, ControllerConfig, SteererKnob
from ..errors import ConfigError, UnknownNameError
from ..regions import CAMERAS, RegionGrid, check_budget
from .policies import Policy, accepts, steerable_model

# the same choices as arrcoc_steer.steering (not imported: it loads torch; a test keeps them equal)
MODES = ("clamp", "add", "scale")
UNITS = ("raw", "calibrated")
POSITIONS = ("all", "text", "image", "action", "proprio")
ALLOCATORS = ("relevance", "uniform", "random", "downsample")
BEHAVIOURS = ("speed",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=@-]{0,99}$")
_INSTRUCTION_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.'-")


def _number(owner: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
    return float(value)


def _choice(owner: str, name: str, value, valid: Sequence[str]) -> None:
    if value not in valid:
        raise UnknownNameError(f"{owner}.{name}", str(value), valid)


# ------------------------------------------------------------------------------------ runtime
class Runtime:
    """What a condition does to one episode. The defaults do nothing (the unsteered run)."""

    def instruction(self, base: str) -> str:
        """The instruction given to the env and the policy, from the task's own."""
        return base

    def steering(self) -> contextlib.AbstractContextManager:
        """Entered before the first step and left after the last (steering hooks live here)."""
        return contextlib.nullcontext()

    def observation(self, obs: dict) -> dict:
        """The observation the policy sees this step."""
        return obs

    def step_kwargs(self, obs: dict, instruction: str) -> dict:
        """Extra keyword arguments of ``predict_action`` this step."""
        return {}

    def after_step(self, speed: float) -> None:
        """Feedback after each ``env.step``: the end-effector speed of that step (m/s)."""

    def traces(self) -> dict[str, np.ndarray]:
        """Per-step arrays to keep with the episode (alpha, allocation, ...)."""
        return {}

    def notes(self) -> dict[str, Any]:
        """JSON-able facts about the episode (intervention counts, reference speed, ...)."""
        return {}


class Resources:
    """Files and helpers a worker loads once and reuses across episodes (concepts, allocators...)."""

    def __init__(self):
        self._cache: dict[tuple, Any] = {}

    def _get(self, key: tuple, load):
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def concepts(self, path: str) -> dict:
        from ..concepts import load_concepts

        return self._get(("concepts", path), lambda: load_concepts(path))

    def calibration(self, path: str):
        from ..steering import Calibration

        return self._get(("calibration", path), lambda: Calibration.load(path))

    def direction(self, path: str):
        """A residual direction or map file (:func:`arrcoc_steer.steering.load_steer`)."""
        from ..steering import load_steer

        return self._get(("direction", path), lambda: load_steer(path))

    def allocator(self, grid: RegionGrid, phase_aware: bool = True):
        from ..relevance import RelevanceAllocator, RelevanceConfig

        config = RelevanceConfig(phase_aware=phase_aware)
        return self._get(("allocator", grid, phase_aware), lambda: RelevanceAllocator(config, grid=grid))


# --------------------------------------------------------------------------------- the specs
@dataclass(frozen=True, kw_only=True)
class Condition:
    """Base of every condition spec. ``name`` labels it in results (a default is derived)."""

    kind: ClassVar[str] = ""
    name: str = ""

    def __post_init__(self):
        self._validate()
        if not self.name:
            object.__setattr__(self, "name", self.default_name())
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"{type(self).__name__}.name must be 1-100 characters of letters, digits and "
                              f"_.+=@- (it names files), starting with a letter or digit; got {self.name!r}")

    def _validate(self) -> None:
        """Check the fields (subclasses); raise ConfigError naming the field and the value."""

    def default_name(self) -> str:
        return self.kind

    @property
    def needs_reference(self) -> bool:
        """Whether episodes need a reference behaviour measured on the baseline condition first."""
        return False

    def files(self) -> dict[str, str]:
        """Fields that name files: {field: path}."""
        return {}

    def check_files(self, resources: Resources | None = None) -> None:
        """Raise when a named file is missing or does not hold what the condition asks for."""
        for name, path in self.files().items():
            if path and not Path(path).is_file():
                raise ConfigError(f"condition {self.name!r}: {name}={path!r} is not a file")

    def check_policy(self, policy: Policy) -> None:
        """Raise when ``policy`` cannot run this condition (called before a sweep starts)."""

    def with_absolute_paths(self) -> Condition:
        """A copy whose file fields are absolute (workers may run elsewhere in the tree)."""
        changes = {k: str(Path(v).resolve()) for k, v in self.files().items() if v}
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Condition):
                value = value.to_dict()
            elif isinstance(value, ControllerConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def runtime(self, policy: Policy, resources: Resources, *, seed: int, reference: float | None = None) -> Runtime:
        """The per-episode hooks of this condition for ``policy``."""
        return Runtime()


@dataclass(frozen=True, kw_only=True)
class Unsteered(Condition):
    """The policy as it is: the baseline."""

    kind: ClassVar[str] = "unsteered"


@dataclass(frozen=True, kw_only=True)
class Prompt(Condition):
    """Append ``modifier`` to the task's instruction (the prompting baseline steering must beat).

    Attributes:
        modifier: words appended after the instruction, e.g. "quickly", "slowly and carefully".
    """

    kind: ClassVar[str] = "prompt"
    modifier: str = "quickly"

    def _validate(self) -> None:
        if not isinstance(self.modifier, str) or not self.modifier.strip():
            raise ConfigError(f"Prompt.modifier must be a non-empty string, got {self.modifier!r}")
        bad = sorted(set(self.modifier) - _INSTRUCTION_CHARS)
        if bad:
            raise ConfigError(f"Prompt.modifier {self.modifier!r} has characters the env's instructions "
                              f"cannot hold: {bad}")

    def default_name(self) -> str:
        return "prompt_" + re.sub(r"[^A-Za-z0-9]+", "_", self.modifier.strip()).strip("_")

    def runtime(self, policy, resources, *, seed, reference=None) -> Runtime:
        return _PromptRuntime(self.modifier.strip())


class _PromptRuntime(Runtime):
    def __init__(self, modifier: str):
        self.modifier = modifier

    def instruction(self, base: str) -> str:
        return f"{base.rstrip(' .')} {self.modifier}"


@dataclass(frozen=True, kw_only=True)
class Concept(Condition):
    """Steer the neurons of named concepts (``layers.{l}.mlp.post``) at every forward call.

    Attributes:
        concepts: path of a concept dictionary (YAML, :func:`arrcoc_steer.concepts.save_concepts`).
        concept: concept name(s) in it; ``"fast/0"`` is cluster 0 of ``"fast"``.
        alpha: strength (raw activation units, or multiples of each neuron's scale if calibrated).
        mode: ``clamp`` (the paper's rule), ``add`` or ``scale``.
        unit: ``raw`` or ``calibrated`` (needs ``calibration``).
        positions: ``all`` / ``text`` / ``image`` / ``action`` / ``proprio`` token positions.
        layers: keep only the concept's neurons in these layers (None: all of them).
        calibration: path of a calibration file (:meth:`arrcoc_steer.steering.Calibration.save`).
    """

    kind: ClassVar[str] = "concept"
    concepts: str = ""
    concept: tuple[str, ...] = ()
    alpha: float = 1.0
    mode: str = "clamp"
    unit: str = "raw"
    positions: str = "all"
    layers: tuple[int, ...] | None = None
    calibration: str | None = None

    def _validate(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.concepts, str) or not self.concepts:
            raise ConfigError(f"{owner}.concepts must be the path of a concept dictionary, got {self.concepts!r}")
        names = (self.concept,) if isinstance(self.concept, str) else tuple(self.concept)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{owner}.concept must name at least one concept, got {self.concept!r}")
        object.__setattr__(self, "concept", names)
        object.__setattr__(self, "alpha", _number(owner, "alpha", self.alpha))
        _choice(owner, "mode", self.mode, MODES)
        _choice(owner, "unit", self.unit, UNITS)
        _choice(owner, "positions", self.positions, POSITIONS)
        if self.mode == "scale" and self.unit == "calibrated":
            raise ConfigError(f"{owner}: mode='scale' multiplies by alpha, so unit must be 'raw'")
        if self.unit == "calibrated" and not self.calibration:
            raise ConfigError(f"{owner}: unit='calibrated' needs calibration=<path of a calibration file>")
        if self.layers is not None:
            layers = tuple(int(l) for l in self.layers)
            if not layers or any(l < 0 for l in layers):
                raise ConfigError(f"{owner}.layers must be None or non-negative layer indices, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(sorted(set(layers))))

    def steer_label(self) -> str:
        label = f"{'+'.join(self.concept).replace('/', '.')}_{self.mode}{self.alpha:g}"
        label += "cal" if self.unit == "calibrated" else ""
        label += f"_{self.positions}" if self.positions != "all" else ""
        label += f"_L{'.'.join(map(str, self.layers))}" if self.layers else ""
        return label

    def default_name(self) -> str:
        return f"concept_{self.steer_label()}"

    def steer_fields(self) -> dict[str, Any]:
        """Everything that defines the steer (a matched random control shares all of it)."""
        return {f.name: getattr(self, f.name) for f in fields(Concept) if f.name != "name"}

    def files(self) -> dict[str, str]:
        return {"concepts": self.concepts, "calibration": self.calibration or ""}

    def check_files(self, resources: Resources | None = None) -> None:
        super().check_files()
        library = (resources or Resources()).concepts(self.concepts)
        for name in self.concept:
            concept = _concept_set(library, name, self.concepts)
            if self.layers is not None and not any(l in self.layers for l, _ in concept.neurons):
                raise ConfigError(f"condition {self.name!r}: concept {name!r} has no neurons in layers "
                                  f"{list(self.layers)} (it has {list(concept.layers)})")

    def check_policy(self, policy: Policy) -> None:
        steerable_model(policy)

    def interventions(self, policy: Policy, resources: Resources, alpha: float | None = None) -> list:
        """The :class:`~arrcoc_steer.steering.Intervention` list this condition applies."""
        from ..steering import Intervention

        library = resources.concepts(self.concepts)
        alpha = self.alpha if alpha is None else alpha
        out = []
        for name in self.concept:
            concept = _concept_set(library, name, self.concepts)
            neurons = [n for n in concept.neurons if self.layers is None or n[0] in self.layers]
            if not neurons:
                raise ConfigError(f"condition {self.name!r}: concept {name!r} has no neurons in layers {self.layers}")
            out.append(Intervention(tuple(neurons), self.mode, alpha, self.unit, self.positions, name, concept.model))
        return out

    def runtime(self, policy, resources, *, seed, reference=None) -> Runtime:
        model = steerable_model(policy)
        calibration = resources.calibration(self.calibration) if self.calibration else None
        return _SteerRuntime(model, self.interventions(policy, resources), calibration)


@dataclass(frozen=True, kw_only=True)
class RandomControl(Concept):
    """A :class:`Concept` steer on random neurons: as many per layer, elsewhere in the same layers.

    Everything but the neurons (alpha, mode, unit, positions) is kept, so the control differs from
    the real steer only in which neurons it touches. ``seed`` draws the neurons.
    """

    kind: ClassVar[str] = "random_control"
    seed: int = 0

    def _validate(self) -> None:
        super()._validate()
        _seed("RandomControl", self.seed)

    def default_name(self) -> str:
        return f"random_{self.steer_label()}_s{self.seed}"

    def matches(self, concept: Concept) -> bool:
        """Whether this control is matched to ``concept`` (same steer, other neurons)."""
        return type(concept) is Concept and concept.steer_fields() == self.steer_fields()

    def interventions(self, policy, resources, alpha=None) -> list:
        from ..steering import random_control

        d_ff = _d_ff(steerable_model(policy))
        rng = np.random.default_rng(self.seed)
        return [random_control(i, rng, d_ff=d_ff) for i in super().interventions(policy, resources, alpha)]


@dataclass(frozen=True, kw_only=True)
class Residual(Condition):
    """Add a residual-stream direction (``layers.{l}.resid_post``) times ``strength`` at every call.

    Attributes:
        direction: path of a direction file (:meth:`arrcoc_steer.steering.ResidualDirection.save`),
            e.g. the mean of "... quickly" minus "... slowly", or of a map file
            (:meth:`arrcoc_steer.steering.ResidualMap.save`; ``positions`` must be those it was fitted on).
        strength: multiplier of the direction.
        positions: token positions acted on.
        layers: keep only these layers of the direction (None: all).
    """

    kind: ClassVar[str] = "residual"
    direction: str = ""
    strength: float = 1.0
    positions: str = "all"
    layers: tuple[int, ...] | None = None

    def _validate(self) -> None:
        if not isinstance(self.direction, str) or not self.direction:
            raise ConfigError(f"Residual.direction must be the path of a direction file, got {self.direction!r}")
        object.__setattr__(self, "strength", _number("Residual", "strength", self.strength))
        _choice("Residual", "positions", self.positions, POSITIONS)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted({int(l) for l in self.layers})))

    def default_name(self) -> str:
        layers = f"_L{'.'.join(map(str, self.layers))}" if self.layers else ""
        positions = f"_{self.positions}" if self.positions != "all" else ""
        return f"residual_{Path(self.direction).stem}_{self.strength:g}{positions}{layers}"

    def steer_fields(self) -> dict[str, Any]:
        """Everything that defines the steer (a matched random direction shares it, up to sign)."""
        return {f.name: getattr(self, f.name) for f in fields(Residual) if f.name != "name"}

    def files(self) -> dict[str, str]:
        return {"direction": self.direction}

    def check_policy(self, policy: Policy) -> None:
        steerable_model(policy)

    def interventions(self, policy: Policy, resources: Resources, alpha: float | None = None) -> list:
        from ..steering import ResidualMap

        direction = resources.direction(self.direction)
        strength = self.strength if alpha is None else alpha
        name = direction.name or Path(self.direction).stem
        if isinstance(direction, ResidualMap):
            if self.positions != direction.positions:
                raise ConfigError(f"condition {self.name!r}: {self.direction} is a map fitted on "
                                  f"{direction.positions!r} positions; set positions={direction.positions!r}")
            maps = {l: m for l, m in direction.maps.items() if self.layers is None or l in self.layers}
            if not maps:
                raise ConfigError(f"condition {self.name!r}: the map has no layer in {self.layers} "
                                  f"(it has {list(direction.layers)})")
            return [replace(direction, maps=maps, strength=strength, name=name)]
        vectors = direction.vectors
        if self.layers is not None:
            vectors = {l: v for l, v in vectors.items() if l in self.layers}
            if not vectors:
                raise ConfigError(f"condition {self.name!r}: the direction has no layer in {self.layers} "
                                  f"(it has {sorted(direction.vectors)})")
        return [replace(direction, vectors=vectors, strength=strength, positions=self.positions, name=name)]

    def runtime(self, policy, resources, *, seed, reference=None) -> Runtime:
        return _SteerRuntime(steerable_model(policy), self.interventions(policy, resources), None)


@dataclass(frozen=True, kw_only=True)
class RandomDirection(Residual):
    """A :class:`Residual` steer along a random direction of the same norm per layer (seeded); for
    a map, its edits turned by a random rotation (:func:`arrcoc_steer.steering.random_direction`).

    Layers, strength and positions are kept, so the control differs from the real steer only in
    its direction. A random direction is sign-symmetric: controls at ``strength`` match the steer
    at ``strength`` and at ``-strength``.
    """

    kind: ClassVar[str] = "random_direction"
    seed: int = 0

    def _validate(self) -> None:
        super()._validate()
        _seed("RandomDirection", self.seed)

    def default_name(self) -> str:
        return f"random_{super().default_name()}_s{self.seed}"

    def steer_fields(self) -> dict[str, Any]:
        return {**super().steer_fields(), "strength": abs(self.strength)}

    def matches(self, residual: Condition) -> bool:
        """Whether this control is matched to ``residual`` (same steer up to sign, other direction)."""
        if type(residual) is not Residual:
            return False
        return {**residual.steer_fields(), "strength": abs(residual.strength)} == self.steer_fields()

    def interventions(self, policy, resources, alpha=None) -> list:
        from ..steering import random_direction

        return [random_direction(d, self.seed) for d in super().interventions(policy, resources, alpha)]


def _seed(owner: str, seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{owner}.seed must be an int >= 0, got {seed!r}")


class _SteerRuntime(Runtime):
    def __init__(self, model, interventions: list, calibration):
        from ..steering import Steerer

        self.steerer = Steerer(model, interventions, calibration=calibration)  # validates now

    def steering(self):
        return self.steerer

    def notes(self) -> dict[str, Any]:
        return {"steer_counts": self.steerer.counts}


@dataclass(frozen=True, kw_only=True)
class ClosedLoop(Condition):
    """Hold a behaviour at ``controller.target_ratio`` x the unsteered policy's by setting alpha each step.

    The measured behaviour (``speed``) is the end-effector speed over the last ``window`` steps (the
    distance travelled / the time), divided by the reference: the unsteered policy's mean speed on
    the task. While that ratio is below ``controller.gate`` (grasping, releasing) alpha is held.
    Measured on the expert (translation gain 2**alpha as the knob, alpha from 0; 3 tasks x 6 seeds):
    +23% matched-window speed and +25% mean speed for a +30% target (both within +-10% of it),
    episodes 19% shorter, success unchanged; the 10-step ratio is in the band on ~55% of the steps
    (the phases of a task differ in speed: the loop holds the mean, not every step).

    Attributes:
        steer: the :class:`Concept` or :class:`Residual` condition whose alpha / strength is the knob;
            None uses the policy's own ``set_strength(alpha)``.
        behaviour: what is held; ``speed`` = end-effector speed (m/s, finite differences at 10 Hz).
        controller: gains, limits, target and band (:class:`~arrcoc_steer.control.ControllerConfig`).
        window: steps of the trailing window the speed is averaged over; None: since the start (then
            the episode's mean speed is what is held; the loop slows as 1 / t but cannot oscillate).
            Longer windows add lag: keep ``ki * g < 0.48`` at 10 steps (:mod:`arrcoc_steer.control`).
        reference: the unsteered mean speed (m/s); None: measured per task on the sweep's baseline
            condition (the mean of its episodes' ``speed_mean``) before these episodes run.
    """

    kind: ClassVar[str] = "closed_loop"
    steer: Concept | Residual | None = None
    behaviour: str = "speed"
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    window: int | None = 10
    reference: float | None = None

    def _validate(self) -> None:
        if isinstance(self.steer, Mapping):
            object.__setattr__(self, "steer", condition_from_dict(self.steer))
        if self.steer is not None and not isinstance(self.steer, (Concept, Residual)):
            raise ConfigError(f"ClosedLoop.steer must be a concept or residual condition or None, got "
                              f"{type(self.steer).__name__}")
        _choice("ClosedLoop", "behaviour", self.behaviour, BEHAVIOURS)
        if isinstance(self.controller, Mapping):
            object.__setattr__(self, "controller", _from_fields(ControllerConfig, self.controller, "controller"))
        if not isinstance(self.controller, ControllerConfig):
            raise ConfigError(f"ClosedLoop.controller must be a ControllerConfig, got {self.controller!r}")
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int)
                                        or self.window < 1):  # fmt: skip
            raise ConfigError(f"ClosedLoop.window must be None or an int >= 1 (steps), got {self.window!r}")
        if self.reference is not None and not _number("ClosedLoop", "reference", self.reference) > 0:
            raise ConfigError(f"ClosedLoop.reference must be > 0 (m/s) or None, got {self.reference!r}")

    def default_name(self) -> str:
        knob = "policy" if self.steer is None else (
            "+".join(self.steer.concept).replace("/", ".") if isinstance(self.steer, Concept)
            else Path(self.steer.direction).stem)  # fmt: skip
        return f"closed_loop_{knob}_{self.behaviour}_x{self.controller.target_ratio:g}"

    @property
    def needs_reference(self) -> bool:
        return self.reference is None

    def files(self) -> dict[str, str]:
        return {}

    def check_files(self, resources: Resources | None = None) -> None:
        if self.steer is not None:
            self.steer.check_files(resources)

    def with_absolute_paths(self) -> Condition:
        return self if self.steer is None else replace(self, steer=self.steer.with_absolute_paths())

    def check_policy(self, policy: Policy) -> None:
        if self.steer is not None:
            self.steer.check_policy(policy)
        elif not callable(getattr(policy, "set_strength", None)):
            raise ConfigError(f"condition {self.name!r} names no steer, so the policy must have "
                              f"set_strength(alpha); {type(policy).__name__} has none")

    def runtime(self, policy, resources, *, seed, reference=None) -> Runtime:
        reference = self.reference if self.reference is not None else reference
        if reference is None:
            raise ConfigError(f"condition {self.name!r} needs a reference {self.behaviour}: give reference= "
                              f"or run it in a sweep with a baseline condition")
        self.check_policy(policy)
        if self.steer is None:
            return _ClosedLoopRuntime(self, reference, policy.set_strength, None)
        steer = self.steer
        calibration = resources.calibration(steer.calibration) if getattr(steer, "calibration", None) else None
        steer.interventions(policy, resources)  # validate names and layers before the episode
        knob = SteererKnob(steerable_model(policy), lambda a: steer.interventions(policy, resources, a),
                           calibration=calibration)
        return _ClosedLoopRuntime(self, reference, knob, knob)


class _ClosedLoopRuntime(Runtime):
    """Feeds the controller the mean speed over the trailing window."""

    def __init__(self, spec: ClosedLoop, reference: float, knob, context):
        self.config, self.window, self.knob, self.context = spec.controller, spec.window, knob, context
        self.reference = float(reference)
        if not (math.isfinite(self.reference) and self.reference > 0):
            raise ConfigError(f"condition {spec.name!r}: the reference speed must be finite and > 0, got {reference!r}")
        self.controller: AlphaController | None = None
        self.speeds: list[float] = []

    @contextlib.contextmanager
    def steering(self):
        with self.context if self.context is not None else contextlib.nullcontext():
            self.controller = AlphaController(self.config, reference=self.reference, knob=self.knob)
            yield

    def after_step(self, speed: float) -> None:
        self.speeds.append(speed)
        recent = self.speeds[-self.window :] if self.window else self.speeds
        self.controller.update(sum(recent) / len(recent))

    def traces(self) -> dict[str, np.ndarray]:
        c = self.controller
        # alpha[t] drove action t: alpha_init, then the value set after each step
        alphas = [self.config.alpha_init, *c.alphas][: len(c.ratios)] if c else []
        return {"alpha": np.asarray(alphas, np.float32), "ratio": np.asarray(c.ratios if c else [], np.float32)}

    def notes(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.reference, "target_ratio": self.config.target_ratio,
                               "tolerance": self.config.tolerance}  # fmt: skip
        if self.controller is not None and self.controller.ratios:
            out["in_band"] = self.controller.in_band()
            out["final_ratio"] = self.controller.ratios[-1]
        if isinstance(self.knob, SteererKnob):
            out["steer_counts"] = self.knob.counts
        return out


@dataclass(frozen=True, kw_only=True)
class Budget(Condition):
    """Spend ``budget`` visual tokens per call as ``allocator`` decides (ARR-COC vs its baselines).

    Attributes:
        budget: visual tokens per policy call (64..400).
        allocator: ``relevance`` (ARR-COC, query-aware), ``uniform`` (uniform pooling), ``random``
            (random keep, drawn per step from the episode seed) or ``downsample`` (whole-image
            downsampling, uniform allocation).
        phase_aware: relevance only: weigh target and destination by the task phase (reach / carry,
            relevance/phase.py); False keeps the reaching weights throughout (the ablation).
    """

    kind: ClassVar[str] = "budget"
    budget: int = 100
    allocator: str = "relevance"
    phase_aware: bool = True

    def _validate(self) -> None:
        object.__setattr__(self, "budget", check_budget(self.budget))
        _choice("Budget", "allocator", self.allocator, ALLOCATORS)
        if not isinstance(self.phase_aware, bool):
            raise ConfigError(f"Budget.phase_aware must be true or false, got {self.phase_aware!r}")
        if not self.phase_aware and self.allocator != "relevance":
            raise ConfigError(f"Budget.phase_aware=false applies to allocator 'relevance' only, not {self.allocator!r}")

    def default_name(self) -> str:
        static = "" if self.phase_aware else "_static"
        return f"budget_{self.allocator}{static}_{self.budget}"

    def check_policy(self, policy: Policy) -> None:
        if not accepts(policy, "allocation"):
            raise ConfigError(f"condition {self.name!r} passes allocation= to predict_action, which "
                              f"{type(policy).__name__}.predict_action does not accept")

    def runtime(self, policy, resources, *, seed, reference=None) -> Runtime:
        self.check_policy(policy)
        grid = getattr(policy, "region_grid", None) or RegionGrid()
        allocator = resources.allocator(grid, self.phase_aware) if self.allocator == "relevance" else None
        return _BudgetRuntime(self, grid, allocator, np.random.default_rng([seed, 0xB06E7]))


class _BudgetRuntime(Runtime):
    def __init__(self, spec: Budget, grid: RegionGrid, allocator, rng: np.random.Generator):
        self.spec, self.grid, self.allocator, self.rng = spec, grid, allocator, rng
        self.allocations: list[np.ndarray] = []
        self.carrying: list[bool] = []

    def observation(self, obs: dict) -> dict:
        if self.spec.allocator != "downsample":
            return obs
        from ..relevance import downsample

        small = downsample(np.stack([obs[c] for c in CAMERAS]), self.spec.budget, self.grid)
        return {**obs, **dict(zip(CAMERAS, small))}

    def step_kwargs(self, obs: dict, instruction: str) -> dict:
        from ..relevance import random_allocation, uniform_allocation

        b = self.spec.budget
        if self.spec.allocator == "relevance":
            result = self.allocator(obs, instruction, budget=b)
            alloc = result.allocation
            self.carrying.append(result.phase == "carry")
        elif self.spec.allocator == "random":
            alloc = random_allocation(b, self.rng, self.grid)
        else:
            alloc = uniform_allocation(b, self.grid)
        self.allocations.append(alloc)
        return {"allocation": alloc}

    def traces(self) -> dict[str, np.ndarray]:
        shape = (0, self.grid.n_cameras, self.grid.regions_per_camera)
        alloc = np.stack(self.allocations) if self.allocations else np.zeros(shape)
        out = {"allocation": alloc.astype(np.int16)}
        if self.spec.allocator == "relevance":
            out["carrying"] = np.asarray(self.carrying, np.int8)  # the phase relevance read, per step
        return out


# ---------------------------------------------------------------------------- construction
KINDS: dict[str, type[Condition]] = {
    c.kind: c for c in (Unsteered, Prompt, Concept, RandomControl, Residual, RandomDirection, ClosedLoop, Budget)
}


def _from_fields(cls, data: Mapping, owner: str):
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(f"{owner} has unknown field(s) {unknown}; valid: {sorted(valid)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


def make_condition(kind: str, **fields_) -> Condition:
    """The condition of ``kind`` (one of :data:`KINDS`) with ``fields_``; errors list valid choices."""
    if kind not in KINDS:
        raise UnknownNameError("condition kind", kind, KINDS)
    return _from_fields(KINDS[kind], fields_, f"condition {kind!r}")


def condition_from_dict(data: Mapping[str, Any]) -> Condition:
    """Inverse of :meth:`Condition.to_dict`: ``{"kind": ..., **fields}``."""
    if not isinstance(data, Mapping) or "kind" not in data:
        raise ConfigError(f"a condition is a mapping with a 'kind' (one of {sorted(KINDS)}), got {data!r}")
    data = dict(data)
    return make_condition(str(data.pop("kind")), **data)


def as_condition(value: Condition | Mapping | str) -> Condition:
    """A condition from a spec, a dict, or a kind whose fields all have defaults (``"unsteered"``)."""
    if isinstance(value, Condition):
        return value
    if isinstance(value, str):
        return make_condition(value)
    return condition_from_dict(value)


def load_conditions(path: str | Path) -> list[Condition]:
    """Read conditions from YAML or JSON: a list of condition mappings, or ``{conditions: [...]}``."""
    import yaml

    doc = yaml.safe_load(Path(path).read_text())  # JSON is YAML
    items = doc.get("conditions") if isinstance(doc, Mapping) else doc
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a list of conditions or {{conditions: [...]}}")
    return [condition_from_dict(item) for item in items]


def save_conditions(path: str | Path, conditions: Iterable[Condition]) -> Path:
    """Write conditions as YAML (``.yaml`` / ``.yml``) or JSON (anything else)."""
    import json

    import yaml

    doc = {"conditions": [c.to_dict() for c in conditions]}
    path = Path(path)
    text = yaml.safe_dump(doc, sort_keys=False) if path.suffix in (".yaml", ".yml") else json.dumps(doc, indent=1)
    path.write_text(text)
    return path


def alpha_grid(concept: Concept, alphas: Iterable[float]) -> list[Concept]:
    """``concept`` at each alpha (the names follow the alphas)."""
    return [replace(concept, alpha=float(a), name="") for a in alphas]


def random_controls(steer: Concept | Residual, n: int = 20,
                    first_seed: int = 0) -> list[RandomControl | RandomDirection]:
    """``n`` matched random controls (seeds ``first_seed ..``; >= 20 for a percentile): random neurons
    for a :class:`Concept`, random directions of the same norm for a :class:`Residual`."""
    if type(steer) is Residual:
        base = {**steer.steer_fields(), "strength": abs(steer.strength)}
        return [RandomDirection(**base, seed=first_seed + i) for i in range(n)]
    if type(steer) is not Concept:
        raise ConfigError(f"random_controls takes a Concept or Residual condition, got {type(steer).__name__}")
    return [RandomControl(**steer.steer_fields(), seed=first_seed + i) for i in range(n)]


def _concept_set(library: Mapping, name: str, path: str):
    if name in library:
        return library[name]
    base, _, index = name.rpartition("/")
    if base in library and index.isdigit():
        concept = library[base]
        if int(index) >= len(concept.clusters):
            raise ConfigError(f"concept {base!r} in {path} has {len(concept.clusters)} clusters; no cluster {index}")
        return concept.cluster(int(index))
    raise UnknownNameError("concept", name, library)


def _d_ff(model) -> int:
    from ..models.adapters import Adapter

    return Adapter(model).spec.d_ff
