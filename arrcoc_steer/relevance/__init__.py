"""ARR-COC relevance realization: query-aware visual token budgets for any policy or VLM.

Ways of knowing (knowing.py, grounded in language by grounding.py, roles weighed by the task's
phase, phase.py) -> opponent processing
(balancing.py) -> RelevanceAllocator with steering biases (allocating.py, biases.py) -> an exact
per-region token budget. Baselines (baselines.py), metrics against segmentation (metrics.py) and a
visual-token pruner for Hugging Face VLMs (pruning.py, imports transformers lazily).

>>> import numpy as np
>>> allocator = RelevanceAllocator()
>>> images = np.full((2, 128, 128, 3), 150, np.uint8); images[0, 10:22, 10:22] = (220, 20, 20)
>>> result = allocator(images, "pick up the red block", budget=100)
>>> int(result.allocation.sum()), result.allocation.shape, str(result.dominant[0, 0])
(100, (2, 16), 'participatory')
"""

from .allocating import LABELS, RelevanceAllocator, RelevanceConfig, RelevanceResult
from .balancing import TENSIONS, WAYS, Balance, Tensions, balance
from .baselines import downsample, downsample_side, random_allocation, uniform_allocation
from .biases import STEER_TARGETS, Steer, gripper_pixels, project_points, steering_bias
from .grounding import Concept, Grounder, Palette, Query, WordEmbedder, default_concepts
from .knowing import (
    ActsOnAllocation,
    ImageStats,
    KnowingMap,
    OcclusionSensitivity,
    participatory,
    perspectival,
    propositional,
)
from .phase import PHASES, ROLE_WEIGHTS, phase_of
from .metrics import detailed_regions, pointing_game, query_sensitivity_iou, target_recall
from .pruning import PrunedInputs, VisualTokenPruner

__all__ = [
    "RelevanceAllocator", "RelevanceConfig", "RelevanceResult", "Tensions", "Steer",
    "uniform_allocation", "random_allocation", "downsample", "downsample_side",
    "target_recall", "pointing_game", "query_sensitivity_iou", "detailed_regions",
    "VisualTokenPruner", "PrunedInputs",
    "Grounder", "Palette", "Concept", "Query", "WordEmbedder", "default_concepts",
    "ImageStats", "KnowingMap", "OcclusionSensitivity", "ActsOnAllocation",
    "propositional", "perspectival", "participatory", "balance", "Balance",
    "steering_bias", "project_points", "gripper_pixels",
    "phase_of", "PHASES", "ROLE_WEIGHTS",
    "WAYS", "TENSIONS", "LABELS", "STEER_TARGETS",
]  # fmt: skip
