"""Every exception arrcoc_steer raises on bad input, in one place.

Each error says what was wrong and what would be right. Errors about values subclass
``ValueError`` and errors about names subclass ``KeyError``-free ``LookupError`` so that generic
``except ValueError`` code keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ArrcocError(Exception):
    """Base class of all arrcoc_steer errors."""


class ConfigError(ArrcocError, ValueError):
    """A value (shape, dtype, range, option) is invalid; the message names the field and the value."""


class UnknownNameError(ArrcocError, LookupError):
    """A name (task, suite, concept, condition, architecture...) is not known.

    The message lists the valid names and, when one is close, says "Did you mean ...?".
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        close = difflib.get_close_matches(str(name), self.valid, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(self.valid[:40]) + (" ..." if len(self.valid) > 40 else "")
        super().__init__(f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {shown}")

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return self.args[0]


class AdapterError(ArrcocError):
    """A model's layout could not be mapped onto the canonical intervention points."""


class SteeringError(ArrcocError, ValueError):
    """An intervention is invalid for the model it is applied to, or never fired."""


class CheckpointError(ArrcocError, ValueError):
    """A checkpoint or cache on disk does not match what it claims to be."""


class MissingDependencyError(ArrcocError, ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the package {package!r}, which is not installed. "
            f"Install it with: pip install 'arrcoc-steer[{extra}]'"
        )
