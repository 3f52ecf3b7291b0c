import itertools

import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from envs.modifiers import HEIGHTS, SPEEDS, Modifiers, parse


@pytest.mark.parametrize("speed,height,care", list(itertools.product(SPEEDS, HEIGHTS, (False, True))))
def test_render_parse_round_trip(speed, height, care):
    m = Modifiers(speed, height, care)
    for seed in range(6):  # several phrase choices
        text = m.render("put the red block in the tray", np.random.default_rng(seed))
        assert text.startswith("put the red block in the tray")
        assert parse(text) == m, text
    if m.is_neutral:
        assert m.render("lift the red block", np.random.default_rng(0)) == "lift the red block"


def test_phrases_vary_with_rng():
    m = Modifiers("fast", "high", True)
    texts = {m.render("lift the red block", np.random.default_rng(s)) for s in range(20)}
    assert len(texts) > 4


def test_parse_free_text():
    assert parse("Quickly put the block away") == Modifiers(speed="fast")
    assert parse("move it at a slow pace, gently") == Modifiers(speed="slow", care=True)
    assert parse("raise it high") == Modifiers(height="high")
    assert parse("slowly... no, quickly") == Modifiers()  # contradictory: stays normal
    assert parse("put the block in the tray") == Modifiers()


def test_validation_and_conversion():
    with pytest.raises(ConfigError, match="speed"):
        Modifiers(speed="ludicrous")
    with pytest.raises(ConfigError, match="height"):
        Modifiers(height="medium")
    with pytest.raises(ConfigError, match="care"):
        Modifiers(care="yes")
    with pytest.raises(ConfigError, match="unknown modifier"):
        Modifiers.from_any({"sped": "fast"})
    assert Modifiers.from_any(None) == Modifiers()
    assert Modifiers.from_any({"height": "low"}) == Modifiers(height="low")
    assert Modifiers.from_any(Modifiers(care=True)).to_dict() == {"speed": "normal", "height": "normal", "care": True}
    with pytest.raises(Exception):
        Modifiers().speed = "fast"  # frozen


def test_sample_covers_all_values():
    rng = np.random.default_rng(0)
    ms = [Modifiers.sample(rng) for _ in range(200)]
    assert {m.speed for m in ms} == set(SPEEDS) and {m.height for m in ms} == set(HEIGHTS)
    assert 0.15 < np.mean([m.care for m in ms]) < 0.45
