"""Behaviour modifiers: how a task is done (speed, carry height, care), said in words.

A :class:`Modifiers` is what steering is measured against: the scripted expert obeys it with measurable
differences (end-effector speed, peak carry height, speed near contact), and :meth:`Modifiers.render`
turns it into a phrase appended to the task's instruction, e.g.

>>> import numpy as np
>>> m = Modifiers(speed="fast", height="high")
>>> text = m.render("put the red block in the tray", np.random.default_rng(0))
>>> parse(text) == m
True
>>> parse("put the red block in the tray")
Modifiers(speed='normal', height='normal', care=False)

Phrases (one chosen at random per factor):
  speed slow: "slowly", "at a slow speed", "at a slow pace"; fast: "quickly", "fast", "rapidly",
  "at a fast speed"; height high: "and lift it high", "and raise it high", "and keep it high";
  low: "and keep it low", "and lift it low", "and hold it low"; care: "carefully", "with care".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from arrcoc_steer.errors import ConfigError

SPEEDS = ("slow", "normal", "fast")
HEIGHTS = ("low", "normal", "high")

SPEED_PHRASES = {
    "slow": ("slowly", "at a slow speed", "at a slow pace"),
    "fast": ("quickly", "fast", "rapidly", "at a fast speed"),
}
HEIGHT_PHRASES = {
    "high": ("and lift it high", "and raise it high", "and keep it high"),
    "low": ("and keep it low", "and lift it low", "and hold it low"),
}
CARE_PHRASES = ("carefully", "with care")

# words that parse() recognises; task paraphrases never contain them (a test checks this)
_SPEED_WORDS = {
    "slow": r"\b(slow|slowly|slower|gradually|unhurried(ly)?)\b",
    "fast": r"\b(fast|faster|quick|quickly|rapid|rapidly|swift|swiftly|hurry|speedily)\b",
}
_HEIGHT_WORDS = {"high": r"\b(high|higher|highly|tall)\b", "low": r"\b(low|lower|lowly)\b"}
_CARE_WORDS = r"\b(careful|carefully|care|gently|gentle|cautious|cautiously)\b"


@dataclass(frozen=True)
class Modifiers:
    """How to do a task.

    Attributes:
        speed: "slow" | "normal" | "fast" -- the expert's translation speed (0.3 / 0.6 / 1.0 of the
            action's maximum step).
        height: "low" | "normal" | "high" -- the carry / lift height of the tool centre point above the
            table (0.09 / 0.16 / 0.26 m).
        care: slow down near contact (final approach before grasp and before release) and lower
            objects closer to the surface before releasing them.
    """

    speed: str = "normal"
    height: str = "normal"
    care: bool = False

    def __post_init__(self):
        if self.speed not in SPEEDS:
            raise ConfigError(f"Modifiers.speed must be one of {SPEEDS}, got {self.speed!r}")
        if self.height not in HEIGHTS:
            raise ConfigError(f"Modifiers.height must be one of {HEIGHTS}, got {self.height!r}")
        if not isinstance(self.care, (bool, np.bool_)):
            raise ConfigError(f"Modifiers.care must be a bool, got {self.care!r}")
        object.__setattr__(self, "care", bool(self.care))

    @property
    def is_neutral(self) -> bool:
        return self == Modifiers()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_any(cls, value: "Modifiers | dict | None") -> "Modifiers":
        """Accept a Modifiers, a dict of its fields (missing fields default) or None (neutral)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            names = {f.name for f in fields(cls)}
            unknown = set(value) - names
            if unknown:
                raise ConfigError(f"unknown modifier field(s) {sorted(unknown)}; valid: {sorted(names)}")
            return cls(**value)
        raise ConfigError(f"modifiers must be a Modifiers, a dict or None, got {type(value).__name__}")

    @classmethod
    def sample(cls, rng: np.random.Generator, p_care: float = 0.3) -> "Modifiers":
        """Sample each factor independently: speed and height uniform, care with probability ``p_care``."""
        speed = SPEEDS[int(rng.integers(3))]
        height = HEIGHTS[int(rng.integers(3))]
        return cls(speed=speed, height=height, care=bool(rng.random() < p_care))

    def render(self, base_instruction: str, rng: np.random.Generator) -> str:
        """Return ``base_instruction`` with a phrase for each non-neutral factor appended.

        The form is ``<base> [<speed>] [and] [<care>][, <height>]``, e.g.
        "put the red block in the tray quickly and carefully, and lift it high".
        """
        adverbs = []
        if self.speed != "normal":
            pool = SPEED_PHRASES[self.speed]
            adverbs.append(pool[int(rng.integers(len(pool)))])
        if self.care:
            adverbs.append(CARE_PHRASES[int(rng.integers(len(CARE_PHRASES)))])
        text = base_instruction.rstrip(" .")
        if adverbs:
            text += " " + " and ".join(adverbs)
        if self.height != "normal":
            pool = HEIGHT_PHRASES[self.height]
            text += ", " + pool[int(rng.integers(len(pool)))]
        return text


def parse(text: str) -> Modifiers:
    """Read the modifiers a free-text instruction asks for (keyword matching, case-insensitive).

    When both poles of a factor appear (e.g. "slowly ... quickly") the factor is left "normal".
    """
    t = text.lower()

    def pole(words: dict[str, str], a: str, b: str) -> str:
        has_a, has_b = bool(re.search(words[a], t)), bool(re.search(words[b], t))
        return a if has_a and not has_b else b if has_b and not has_a else "normal"

    care = bool(re.search(_CARE_WORDS, t))
    return Modifiers(
        speed=pole(_SPEED_WORDS, "slow", "fast"),
        height=pole(_HEIGHT_WORDS, "low", "high"),
        care=care,
    )
