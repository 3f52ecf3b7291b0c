"""arrcoc_steer: activation steering and ARR-COC relevance control for vision-language-action models.

The public API fits on one screen; each name loads its module (and torch, transformers, nnsight)
on first use, so ``import arrcoc_steer`` itself is cheap and has no side effects.

    >>> import arrcoc_steer as ac
    >>> policy = ac.load_policy()                                    # doctest: +SKIP
    >>> atlas = ac.NeuronAtlas.build(policy)                         # doctest: +SKIP
    >>> fast = ac.find_concept(atlas, ["fast"], policy)              # doctest: +SKIP
    >>> with ac.Steerer(policy, [ac.Intervention.from_concept(fast, alpha=4)]):
    ...     action = policy.predict_action(obs, "lift the red block")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # the default policy
    "MiniVLA": "arrcoc_steer.models.minivla",
    "load_policy": "arrcoc_steer.models.minivla",
    # see: the neuron atlas and concepts
    "NeuronAtlas": "arrcoc_steer.atlas",
    "ConceptSet": "arrcoc_steer.concepts",
    "find_concept": "arrcoc_steer.concepts",
    "ActionReadout": "arrcoc_steer.readout",
    "find_action_concept": "arrcoc_steer.concepts",
    "PromptMeaning": "arrcoc_steer.concepts",
    "load_concepts": "arrcoc_steer.concepts",
    "save_concepts": "arrcoc_steer.concepts",
    # steer
    "Intervention": "arrcoc_steer.steering",
    "ResidualDirection": "arrcoc_steer.steering",
    "ResidualMap": "arrcoc_steer.steering",
    "Steerer": "arrcoc_steer.steering",
    "calibrate": "arrcoc_steer.steering",
    "random_control": "arrcoc_steer.steering",
    "random_direction": "arrcoc_steer.steering",
    "AlphaController": "arrcoc_steer.control",
    # spend visual tokens: ARR-COC
    "RelevanceAllocator": "arrcoc_steer.relevance",
    "RelevanceConfig": "arrcoc_steer.relevance",
    "Steer": "arrcoc_steer.relevance",
    "VisualTokenPruner": "arrcoc_steer.relevance",
    "RegionGrid": "arrcoc_steer.regions",
    # adapt any model
    "spec_for": "arrcoc_steer.models.adapters",
    "register_spec": "arrcoc_steer.models.adapters",
    "ModelSpec": "arrcoc_steer.models.adapters",
    # measure
    "evaluate": "arrcoc_steer.eval",
    "write_report": "arrcoc_steer.viz.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'arrcoc_steer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
