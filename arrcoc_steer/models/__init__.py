"""Model adapters, tiny test models and the default policy."""

from .adapters import Adapter, ModelSpec, register_spec, spec_for

__all__ = ["Adapter", "ModelSpec", "register_spec", "spec_for"]
