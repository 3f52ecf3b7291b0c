"""Condition specs: validation, names, YAML / JSON round trip, errors that list the valid choices."""

from __future__ import annotations

import pytest

from arrcoc_steer.control import ControllerConfig
from arrcoc_steer.errors import ConfigError, UnknownNameError
from arrcoc_steer.eval import conditions as C


def every_kind(concepts: str) -> list[C.Condition]:
    fast = C.Concept(concepts=concepts, concept=["fast", "slow"], alpha=2.5, unit="raw", layers=[3, 2])
    return [
        C.Unsteered(),
        C.Prompt(modifier="quickly"),
        fast,
        C.RandomControl(concepts=concepts, concept="fast", alpha=4, seed=7),
        C.Residual(direction="speed.safetensors", strength=2.0, positions="text"),
        C.RandomDirection(direction="speed.safetensors", strength=2.0, positions="text", seed=3),
        C.ClosedLoop(steer=fast, controller=ControllerConfig(target_ratio=1.3, alpha_max=8.0)),
        C.ClosedLoop(reference=0.15),
        C.Budget(budget=100, allocator="random"),
        C.Budget(budget=64, phase_aware=False),
    ]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_files(tmp_path, concepts_file, suffix):
    conditions = every_kind(concepts_file)
    path = C.save_conditions(tmp_path / f"conditions{suffix}", conditions)
    assert C.load_conditions(path) == conditions
    assert [C.condition_from_dict(c.to_dict()) for c in conditions] == conditions


def test_default_names_are_readable_and_distinct(concepts_file):
    names = [c.name for c in every_kind(concepts_file)]
    assert names[:6] == ["unsteered", "prompt_quickly", "concept_fast+slow_clamp2.5_L2.3",
                         "random_fast_clamp4_s7", "residual_speed_2_text", "random_residual_speed_2_text_s3"]
    assert names[-2:] == ["budget_random_100", "budget_relevance_static_64"]
    assert len(set(names)) == len(names)


def test_unknown_kind_lists_valid_kinds_and_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'concept'.*Valid condition kinds: budget"):
        C.make_condition("concpt", concept="fast")


def test_unknown_field_and_bad_values_name_the_field(concepts_file):
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['strenght'\]"):
        C.condition_from_dict({"kind": "residual", "direction": "d.safetensors", "strenght": 1})
    with pytest.raises(ConfigError, match="Concept.alpha must be a finite number"):
        C.Concept(concepts=concepts_file, concept="fast", alpha=float("nan"))
    with pytest.raises(UnknownNameError, match="Concept.mode"):
        C.Concept(concepts=concepts_file, concept="fast", mode="clmp")
    with pytest.raises(ConfigError, match="needs calibration"):
        C.Concept(concepts=concepts_file, concept="fast", unit="calibrated")
    with pytest.raises(ConfigError, match="outside the supported range"):
        C.Budget(budget=10)
    with pytest.raises(UnknownNameError, match="Valid Budget.allocators: downsample, random, relevance, uniform"):
        C.Budget(allocator="smart")
    with pytest.raises(ConfigError, match="applies to allocator 'relevance' only"):
        C.Budget(allocator="uniform", phase_aware=False)
    with pytest.raises(ConfigError, match="phase_aware must be true or false"):
        C.Budget(phase_aware="yes")
    with pytest.raises(ConfigError, match="characters the env's instructions cannot hold"):
        C.Prompt(modifier="quickly!")
    with pytest.raises(ConfigError, match="name must be"):
        C.Unsteered(name="a/b")
    with pytest.raises(ConfigError, match="target_ratio must be > 0"):
        C.ClosedLoop(controller={"target_ratio": -1})


def test_unknown_concept_lists_the_file_s_concepts(concepts_file):
    good = C.Concept(concepts=concepts_file, concept=["fast/1", "slow"])
    good.check_files()  # "fast/1" is cluster 1 of "fast"
    with pytest.raises(UnknownNameError, match="Did you mean 'fast'.*Valid concepts: fast, slow"):
        C.Concept(concepts=concepts_file, concept="fats").check_files()
    with pytest.raises(ConfigError, match=r"no neurons in layers \[5\] \(it has \[2, 3\]\)"):
        C.Concept(concepts=concepts_file, concept="fast", layers=[5]).check_files()
    with pytest.raises(ConfigError, match="is not a file"):
        C.Concept(concepts="nowhere.yaml", concept="fast").check_files()


def test_random_controls_match_their_concept_only(concepts_file):
    fast = C.Concept(concepts=concepts_file, concept="fast", alpha=4.0)
    controls = C.random_controls(fast, n=20)
    assert len({c.name for c in controls}) == 20 and all(c.matches(fast) for c in controls)
    assert not controls[0].matches(C.alpha_grid(fast, [8.0])[0])


def test_random_directions_match_their_residual_up_to_sign(concepts_file):
    up = C.Residual(direction="speed.safetensors", strength=2.0, positions="action")
    down = C.Residual(direction="speed.safetensors", strength=-2.0, positions="action")
    controls = C.random_controls(down, n=20)
    assert all(isinstance(c, C.RandomDirection) and c.strength == 2.0 for c in controls)
    assert len({c.name for c in controls}) == 20 and all(c.matches(up) and c.matches(down) for c in controls)
    assert not controls[0].matches(C.Residual(direction="speed.safetensors", strength=1.0, positions="action"))
    assert not controls[0].matches(C.Residual(direction="speed.safetensors", strength=2.0, positions="all"))
    assert not controls[0].matches(controls[1])
    with pytest.raises(ConfigError, match="RandomDirection.seed must be an int >= 0"):
        C.RandomDirection(direction="speed.safetensors", seed=-1)
    with pytest.raises(ConfigError, match="takes a Concept or Residual condition, got Prompt"):
        C.random_controls(C.Prompt(modifier="quickly"))


def test_constants_match_the_steering_module():
    from arrcoc_steer import steering

    assert (C.MODES, C.UNITS, C.POSITIONS) == (steering.MODES, steering.UNITS, steering.POSITIONS)


def test_prompt_appends_the_modifier():
    rt = C.Prompt(modifier="slowly").runtime(None, C.Resources(), seed=0)
    assert rt.instruction("put the block in the tray.") == "put the block in the tray slowly"


def test_closed_loop_without_reference_or_knob_is_refused():
    with pytest.raises(ConfigError, match="needs a reference"):
        C.ClosedLoop().runtime(object(), C.Resources(), seed=0)
    with pytest.raises(ConfigError, match="set_strength"):
        C.ClosedLoop().runtime(object(), C.Resources(), seed=0, reference=0.1)
