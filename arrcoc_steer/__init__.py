"""arrcoc_steer: activation steering and ARR-COC relevance control for vision-language-action models.

The public API is small; heavy modules (torch, transformers, nnsight) load on first use.
"""

__version__ = "0.1.0"
