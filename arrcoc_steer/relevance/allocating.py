"""RelevanceAllocator: observation + instruction -> ways of knowing -> tensions -> token budgets.

The allocator is the whole ARR-COC step a control loop calls once per observation::

    allocator = RelevanceAllocator()
    result = allocator(obs, "pick up the red block", budget=100, steer=[Steer("gripper", 0.3)])
    action = policy.predict_action(obs, instruction, allocation=result.allocation)

1. ``ImageStats`` of both cameras in one pass, then the propositional, perspectival and participatory
   maps (knowing.py; the instruction is parsed once and cached, grounding.py; the participatory map
   weighs target and destination by the task's phase, read from ``obs["state"]``, phase.py), plus
   the optional procedural map.
2. Opponent processing (balancing.py) on the 4 x 4 regions (and on the 16 x 16 cells when
   ``RelevanceConfig.cell_relevance``; ``relevance_maps`` does that alone, for VLM token pruning).
3. ``relevance = camera_weight * balanced + steering bias`` (biases.py).
4. ``RegionGrid.allocate``: water-filling with an exact total, deterministic and monotone.

It never touches the policy: relevance plugs into any model that accepts an allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..regions import CAMERAS, RegionGrid, check_budget
from .balancing import NONE, TENSIONS, WAYS, Balance, Tensions, balance
from .biases import Steer, check_masks, steering_bias
from .grounding import Grounder, Query
from .knowing import ImageStats, KnowingMap, OcclusionSensitivity, participatory, perspectival, propositional
from .phase import check_phase, phase_of

STEERING = "steering"
LABELS = (*WAYS, STEERING, NONE)  # values of RelevanceResult.dominant


@dataclass(frozen=True)
class RelevanceConfig:
    """Every knob of the relevance computation."""

    tensions: Tensions = Tensions()
    """the three opponent-processing knobs (balancing.py)."""
    camera_weights: tuple[float, ...] = (1.0, 1.0)
    """multiplies each camera's balanced relevance (agentview, wrist) before the biases."""
    floors: tuple[float, float, float] = (1.0, 0.1, 0.03)
    """evidence floors of propositional (bits), perspectival (contrast) and participatory (pixel fraction)."""
    cell_relevance: bool = False
    """also balance the 16 x 16 cell maps into ``RelevanceResult.cell_relevance`` (~0.15 ms)."""
    phase_aware: bool = True
    """read the phase (reach / carry) from ``obs["state"]``'s fingers; False: always "reach" (fixed roles)."""

    def __post_init__(self):
        if not isinstance(self.tensions, Tensions):
            raise ConfigError(f"RelevanceConfig.tensions must be a Tensions, got {type(self.tensions).__name__}")
        w = np.asarray(self.camera_weights, float)
        if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise ConfigError(f"RelevanceConfig.camera_weights must be finite, >= 0, not all 0: {self.camera_weights}")
        if len(self.floors) != 3 or not all(f > 0 for f in self.floors):
            raise ConfigError(f"RelevanceConfig.floors must be three positive numbers, got {self.floors}")
        if not isinstance(self.phase_aware, bool):
            raise ConfigError(f"RelevanceConfig.phase_aware must be True or False, got {self.phase_aware!r}")


@dataclass(frozen=True, eq=False)
class RelevanceResult:
    """Everything ARR-COC decided for one observation, and why. Arrays are ``(n_cameras, R)``."""

    instruction: str | None
    budget: int
    cameras: tuple[str, ...]
    grid: RegionGrid
    maps: dict[str, np.ndarray]  # way of knowing -> (n, R) in [0, 1]
    cell_maps: dict[str, np.ndarray]  # way of knowing -> (n, G, G)
    strength: dict[str, np.ndarray]  # way of knowing -> (n,) evidence in [0, 1]
    relevance: np.ndarray  # final, bias included
    bias: np.ndarray  # the steering part of relevance
    allocation: np.ndarray  # int tokens per region, sum == budget
    dominant: np.ndarray  # str: a way of knowing, "steering" or "none"
    tension_winners: dict[str, np.ndarray]  # tension -> str pole per region
    tension_margins: dict[str, np.ndarray]  # tension -> float, > 0 favours the first pole
    cell_relevance: np.ndarray | None = None  # (n, G, G) balanced cell map, bias excluded
    query: Query | None = field(default=None, repr=False)
    phase: str = "reach"  # the task phase the participatory map weighed its roles by (phase.py)

    def detailed(self) -> np.ndarray:
        """Bool ``(n, R)``: regions with more tokens than the uniform share ``budget / n_regions``."""
        return self.allocation > self.budget / self.allocation.size

    def explain(self, camera: str, region: int) -> str:
        """One line on why ``region`` of ``camera`` got its tokens."""
        i = self.cameras.index(camera)
        poles = ", ".join(f"{t.replace('_vs_', '/')}: {w[i, region]}" for t, w in self.tension_winners.items())
        ways = ", ".join(f"{k[:5]}={v[i, region]:.2f}" for k, v in self.maps.items())
        return (
            f"{camera} region {region}: {self.allocation[i, region]} tokens, relevance {self.relevance[i, region]:.3f}"
            f" (bias {self.bias[i, region]:+.2f}); dominant {self.dominant[i, region]}; {poles}; {ways};"
            f" phase {self.phase}"
        )


def _winners(b: Balance) -> dict[str, np.ndarray]:
    """Tension -> name of the winning pole per element."""
    return {t: np.where(b.first_pole_won[t], *TENSIONS[t]) for t in TENSIONS}


class RelevanceAllocator:
    """Query-aware visual token budgets (module docstring). Thread-compatible, holds only caches."""

    def __init__(
        self,
        config: RelevanceConfig | None = None,
        *,
        grid: RegionGrid | None = None,
        grounder: Grounder | None = None,
        procedural: OcclusionSensitivity | None = None,
        cameras: Sequence[str] = CAMERAS,
    ):
        self.config = config or RelevanceConfig()
        self.grid = grid or RegionGrid()
        self.cameras = tuple(cameras)
        if len(self.cameras) != self.grid.n_cameras:
            raise ConfigError(f"cameras {self.cameras} do not match RegionGrid.n_cameras={self.grid.n_cameras}")
        if len(self.config.camera_weights) != len(self.cameras):
            raise ConfigError(f"camera_weights {self.config.camera_weights} need one weight per camera {self.cameras}")
        self.grounder = grounder or Grounder()
        self.procedural = procedural

    # -- the pieces ------------------------------------------------------------------------------
    def images(self, obs: Mapping[str, Any] | np.ndarray) -> np.ndarray:
        """``(n_cameras, S, S, 3)`` uint8 from an observation dict or an image array."""
        if isinstance(obs, Mapping):
            missing = [c for c in self.cameras if c not in obs]
            if missing:
                raise ConfigError(f"observation lacks camera(s) {missing}; it has keys {sorted(obs)}")
            return np.stack([np.asarray(obs[c]) for c in self.cameras])
        images = np.asarray(obs)
        if images.ndim != 4 or len(images) != len(self.cameras):
            raise ConfigError(f"images must be ({len(self.cameras)}, S, S, 3), one per camera, got {images.shape}")
        return images

    def query(self, instruction: str | None) -> Query:
        return self.grounder.query(instruction or "")

    def phase(self, obs, phase: str | None = None) -> str:
        """``phase`` if given; else, when ``config.phase_aware``, the one ``obs["state"]`` shows; else "reach"."""
        if phase is not None:
            return check_phase(phase)
        if self.config.phase_aware and isinstance(obs, Mapping) and obs.get("state") is not None:
            return phase_of(obs["state"])
        return "reach"

    def _ways(self, stats: ImageStats, instruction: str | None, phase: str = "reach") -> dict[str, KnowingMap]:
        fp, fs, fc = self.config.floors
        return {
            "propositional": propositional(stats, fp),
            "perspectival": perspectival(stats, fs),
            "participatory": participatory(stats, self.query(instruction), fc, phase=phase),
        }

    def knowing(self, obs, instruction: str | None = None, phase: str | None = None) -> dict[str, KnowingMap]:
        """The ways of knowing of one observation (each normalised within each image)."""
        stats = ImageStats.compute(self.images(obs), self.grid, self.grounder.palette)
        maps = self._ways(stats, instruction, self.phase(obs, phase))
        if self.procedural is not None:
            if not isinstance(obs, Mapping):
                raise ConfigError("the procedural way of knowing needs the observation dict, not bare images")
            maps["procedural"] = self.procedural(obs, instruction or "", self.cameras)
        return maps

    def relevance_maps(self, images: Sequence[np.ndarray] | np.ndarray, instruction: str | None = None) -> np.ndarray:
        """``(n, G, G)`` balanced cell relevance of any number of RGB images of any size.

        Each image is resized (nearest) to the grid's image size; no steering, no allocation. This is
        what ``pruning.VisualTokenPruner`` ranks a VLM's image tokens by.
        """
        s = self.grid.image_size
        resized = []
        for img in images:
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ConfigError(f"images must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
            rows = (np.arange(s) + 0.5) * img.shape[0] / s
            cols = (np.arange(s) + 0.5) * img.shape[1] / s
            resized.append(img[rows.astype(int)][:, cols.astype(int)])
        maps = self._ways(ImageStats.compute(np.stack(resized), self.grid, self.grounder.palette), instruction)
        strength = {k: m.strength for k, m in maps.items()}
        return balance({k: m.cells for k, m in maps.items()}, strength, self.config.tensions).relevance

    # -- the step --------------------------------------------------------------------------------
    def __call__(
        self,
        obs: Mapping[str, Any] | np.ndarray,
        instruction: str | None = None,
        *,
        budget: int = 100,
        steer: Sequence[Steer] = (),
        gripper_px: Mapping[str, tuple[float, float]] | None = None,
        target_masks: np.ndarray | None = None,
        phase: str | None = None,
    ) -> RelevanceResult:
        """Relevance, allocation and their explanation for one observation.

        obs: dict with one ``(S, S, 3)`` uint8 image per camera (and optionally "instruction" and
        "state"), or ``(n_cameras, S, S, 3)``. gripper_px: ``{camera: (u, v)}`` for Steer("gripper").
        target_masks: ``(n_cameras, S, S)`` target segmentation for Steer("target"). phase: "reach"
        or "carry" overrides the phase read from ``obs["state"]``.
        """
        budget = check_budget(budget)
        phase = self.phase(obs, phase)
        if isinstance(steer, Steer):
            steer = (steer,)
        if instruction is None and isinstance(obs, Mapping):
            instruction = obs.get("instruction")
        if target_masks is not None:
            target_masks = check_masks(target_masks, self.grid, len(self.cameras), "target_masks")
        kmaps = self.knowing(obs, instruction, phase)
        n, g = len(self.cameras), self.grid.grid
        strength = {k: m.strength for k, m in kmaps.items()}
        tensions = self.config.tensions
        regional = balance({k: m.regions.reshape(n, g, g) for k, m in kmaps.items()}, strength, tensions)
        cells = None
        if self.config.cell_relevance:
            cells = balance({k: m.cells for k, m in kmaps.items()}, strength, tensions).relevance

        weights = np.asarray(self.config.camera_weights, np.float64)[:, None]
        balanced = weights * regional.relevance.reshape(n, -1)
        bias = steering_bias(
            steer, self.grid, self.cameras, gripper_px=gripper_px, target_masks=target_masks,
            target_cells=kmaps["participatory"].cells,
        )  # fmt: skip
        relevance = balanced + bias
        allocation = self.grid.allocate(relevance, budget)

        dominant = np.array(LABELS)[regional.dominant.reshape(n, -1)]  # index -1 -> "none"
        dominant = np.where(bias > balanced, STEERING, dominant)
        flat = lambda d: {k: v.reshape(n, -1) for k, v in d.items()}
        return RelevanceResult(
            instruction=instruction,
            budget=budget,
            cameras=self.cameras,
            grid=self.grid,
            maps={k: m.regions for k, m in kmaps.items()},
            cell_maps={k: m.cells for k, m in kmaps.items()},
            strength=strength,
            relevance=relevance,
            bias=bias,
            allocation=allocation,
            dominant=dominant,
            tension_winners=flat(_winners(regional)),
            tension_margins=flat(regional.margins),
            cell_relevance=cells,
            query=self.query(instruction),
            phase=phase,
        )

    def allocate(self, obs, instruction: str | None = None, budget: int = 100, **kwargs) -> np.ndarray:
        """Just the ``(n_cameras, R)`` int allocation (what a policy's ``allocation=`` takes)."""
        return self(obs, instruction, budget=budget, **kwargs).allocation
