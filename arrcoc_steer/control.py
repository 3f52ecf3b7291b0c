"""Closed-loop steering strength: adjust alpha at every control step to hold a behaviour target.

A fixed steering strength is a blunt tool: large clamps destroy task success (DESIGN.md: 71% -> 2% on
LIBERO at alpha 20 for speed), and the same alpha has a different effect in every phase of a task.
The remedy is feedback: measure the behaviour while the episode runs and set the strength of the
next forward call from the error.

The controller is a PI controller on the log of the behaviour ratio, with a clamped integrator
(anti-windup: at a limit it stops accumulating, so it leaves the limit as soon as the error turns)
and a gate for the moments the policy is meant to be still (closing the gripper)::

    r_t     = y_t / y_ref,t                                     measured ratio to the reference
    e_t     = s * (log(target_ratio) - log(max(r_t, 1e-6)))     log error (x2 and /2 weigh alike)
    I_t     = clip(I_{t-1} + ki * e_t, the range that keeps alpha_t inside [alpha_min, alpha_max])
    alpha_t = alpha_init + kp * e_t + I_t                      held (no update) while r_t < gate

``s`` (``direction``) is +1 when a larger alpha increases the behaviour (a "fast" concept) and -1 when
it decreases it (a "slow" concept). What ``y`` and ``y_ref`` are is the caller's choice; the
closed-loop condition of :mod:`arrcoc_steer.eval.conditions` uses the distance the end effector
travelled over a trailing window (or since the start) against the distance the unsteered policy
travelled over the same time span -- a length-controlled speed ratio.

Stability: the integrator is itself the noise filter. With ``g = d log(y) / d alpha``, an integrator
on the raw per-step ratio converges for ``ki * g < 2``; averaging the measurement over a trailing
W-step window adds lag and lowers the limit (``< 0.95`` at W = 5, ``< 0.48`` at W = 10); a ratio
of distances since the start slows the loop as ``1 / t`` but cannot oscillate. With the default
``ki = 0.3``: ``g < 6`` per step, ``g < 1.6`` at W = 10.

The controller knows nothing about models: it drives a *knob*, any callable ``knob(alpha)`` that sets
the strength for the next forward call -- a neuron clamp, a residual direction's multiplier, or a
policy's own method. :class:`SteererKnob` is the knob for :class:`~arrcoc_steer.steering.Steerer`
interventions.

>>> import math
>>> speed = lambda a: 0.1 * math.exp(0.4 * a)          # a plant whose speed grows with alpha
>>> ctl = AlphaController(ControllerConfig(target_ratio=1.3, ki=0.5), reference=0.1)
>>> for _ in range(60):
...     alpha = ctl.update(speed(ctl.alpha))
>>> round(speed(ctl.alpha) / 0.1, 2)
1.3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from .errors import ConfigError, SteeringError

Knob = Callable[[float], None]  # sets the steering strength for the next forward call


@dataclass(frozen=True)
class ControllerConfig:
    """Settings of :class:`AlphaController`; every field is validated.

    Attributes:
        target_ratio: behaviour to hold, as a multiple of the reference (1.3 = +30% speed).
        tolerance: the band counted as "holding": ``|r / target_ratio - 1| <= tolerance``.
        alpha_init: strength before the first measurement and the controller's operating point.
        alpha_min, alpha_max: the safe range alpha is clipped to.
        kp: proportional gain, alpha units per unit of log error.
        ki: integral gain, alpha units per unit of log error per step.
        gate: below this ratio in a step the policy is taken to pause on purpose; alpha is held.
        direction: +1 if a larger alpha increases the behaviour, -1 if it decreases it.
    """

    target_ratio: float = 1.3
    tolerance: float = 0.1
    alpha_init: float = 0.0
    alpha_min: float = 0.0
    alpha_max: float = 10.0
    kp: float = 0.0
    ki: float = 0.3
    gate: float = 0.25
    direction: int = 1

    def __post_init__(self):
        for name in ("target_ratio", "tolerance", "alpha_init", "alpha_min", "alpha_max", "kp", "ki", "gate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"ControllerConfig.{name} must be a finite number, got {value!r}")
        if self.target_ratio <= 0:
            raise ConfigError(f"ControllerConfig.target_ratio must be > 0, got {self.target_ratio}")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"ControllerConfig.tolerance must be in (0, 1), got {self.tolerance}")
        if not self.alpha_min <= self.alpha_init <= self.alpha_max:
            raise ConfigError(f"ControllerConfig needs alpha_min <= alpha_init <= alpha_max, got "
                              f"{self.alpha_min} <= {self.alpha_init} <= {self.alpha_max}")
        if self.kp < 0 or self.ki < 0 or self.kp + self.ki == 0:
            raise ConfigError(f"ControllerConfig gains must be >= 0 and not both 0, got kp={self.kp}, ki={self.ki}")
        if not 0 <= self.gate < self.target_ratio:
            raise ConfigError(f"ControllerConfig.gate must be in [0, target_ratio), got {self.gate}")
        if self.direction not in (1, -1):
            raise ConfigError(f"ControllerConfig.direction must be +1 or -1, got {self.direction!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class AlphaController:
    """Hold ``behaviour / reference`` at ``config.target_ratio`` by setting alpha every step.

    Args:
        config: gains, limits and target (:class:`ControllerConfig`).
        reference: the unsteered policy's value of the behaviour (e.g. its mean speed, m/s), used
            when :meth:`update` is given none.
        knob: called with every new alpha (also once with ``alpha_init`` on :meth:`reset`).

    Call :meth:`update` once per control step with the latest measurement (and, when the reference
    changes along the episode, its value now); it returns the alpha for the next forward call.
    ``alphas`` and ``ratios`` keep every step for the record.
    """

    def __init__(self, config: ControllerConfig | None = None, *, reference: float = 1.0, knob: Knob | None = None):
        self.config = config or ControllerConfig()
        self.reference = _positive("reference", reference)
        self.knob = knob
        self.reset()

    def reset(self) -> None:
        """Start of an episode: integrator at 0, alpha at ``alpha_init``."""
        self._integral = 0.0
        self.alphas: list[float] = []  # alpha set after each update
        self.ratios: list[float] = []  # measured ratio at each update
        self._set(self.config.alpha_init)

    @property
    def alpha(self) -> float:
        return self._alpha

    def update(self, measurement: float, reference: float | None = None) -> float:
        """Feed one measurement of the behaviour; returns the new alpha.

        ``reference`` overrides the constructor's for this step (a reference that changes along the
        episode).
        """
        c = self.config
        if not math.isfinite(measurement) or measurement < 0:
            raise ConfigError(f"AlphaController.update needs a finite measurement >= 0, got {measurement!r}")
        ratio = measurement / (self.reference if reference is None else _positive("reference", reference))
        if ratio >= c.gate:
            error = c.direction * (math.log(c.target_ratio) - math.log(max(ratio, 1e-6)))
            offset = c.alpha_init + c.kp * error
            self._integral = min(max(self._integral + c.ki * error, c.alpha_min - offset), c.alpha_max - offset)
            self._set(offset + self._integral)
        self.alphas.append(self._alpha)
        self.ratios.append(ratio)
        return self._alpha

    def in_band(self, ratios: Sequence[float] | None = None) -> float:
        """Fraction of ``ratios`` (default: every step so far) within the tolerance band of the target."""
        ratios = self.ratios if ratios is None else ratios
        if not ratios:
            return float("nan")
        c = self.config
        return sum(abs(r / c.target_ratio - 1) <= c.tolerance for r in ratios) / len(ratios)

    def _set(self, alpha: float) -> None:
        c = self.config
        self._alpha = min(max(float(alpha), c.alpha_min), c.alpha_max)
        if self.knob is not None:
            self.knob(self._alpha)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"AlphaController.{name} must be a finite number > 0, got {value!r}")
    return float(value)


class SteererKnob:
    """A knob over :class:`~arrcoc_steer.steering.Steerer`: each new alpha re-attaches the interventions.

    Args:
        model: the steered torch model.
        build: ``alpha -> interventions`` (e.g. ``lambda a: [Intervention(neurons, alpha=a)]`` or
            ``lambda a: [direction.with_strength(a)]``), so one knob serves neuron clamps and
            residual directions alike.
        calibration, backend: passed to every Steerer.
        resolution: alphas closer than this to the attached one keep the current Steerer.

    Use as a context manager; on exit everything is detached, and if no intervention ever changed a
    token position a :class:`SteeringError` is raised (a steer that never fires is an error).
    Re-attaching costs a few milliseconds (one ``Steerer`` plan), small next to a policy step.
    """

    def __init__(self, model, build: Callable[[float], list], *, calibration=None, backend: str = "hooks",
                 resolution: float = 1e-3):
        self.model, self.build, self.calibration, self.backend = model, build, calibration, backend
        self.resolution = resolution
        self._steerer = None
        self._alpha: float | None = None
        self.counts: dict[str, int] = {}

    def __call__(self, alpha: float) -> None:
        if self._alpha is not None and abs(alpha - self._alpha) < self.resolution:
            return
        from .steering import Steerer

        steerer = Steerer(self.model, self.build(alpha), calibration=self.calibration, backend=self.backend,
                          strict=False)  # validate before detaching the old one
        self._detach()
        steerer.attach()
        self._steerer, self._alpha = steerer, float(alpha)

    def _detach(self) -> None:
        if self._steerer is not None:
            self._steerer.detach()
            for name, n in self._steerer.counts.items():
                self.counts[name] = self.counts.get(name, 0) + n
            self._steerer = None

    def __enter__(self) -> SteererKnob:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._detach()
        self._alpha = None
        if exc_type is None and self.counts and not any(self.counts.values()):
            raise SteeringError(f"closed-loop interventions {sorted(self.counts)} never fired: was the "
                                f"model called while the knob was attached?")
