import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.relevance import WAYS, Tensions, balance

ONE = {"participatory": np.ones(1)}


def grid(**points) -> np.ndarray:
    """(1, 4, 4) zeros with ``rRC=value`` entries."""
    a = np.zeros((1, 4, 4))
    for k, v in points.items():
        a[0, int(k[1]), int(k[2])] = v
    return a


def flat(v=0.0):
    return np.full((1, 4, 4), v)


@pytest.mark.parametrize("field", ["exploit", "particularize", "focus"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5"])
def test_tensions_are_validated(field, value):
    with pytest.raises(ConfigError, match=f"Tensions.{field}"):
        Tensions(**{field: value})


def test_exploit_follows_the_instruction_explore_follows_salience():
    maps = {"propositional": flat(1), "perspectival": grid(r00=1.0), "participatory": grid(r33=1.0)}
    exploit = balance(maps, ONE, Tensions(exploit=1.0, focus=1.0))
    explore = balance(maps, ONE, Tensions(exploit=0.0, focus=1.0))
    assert exploit.relevance[0].argmax() == 15 and explore.relevance[0].argmax() == 0
    won = exploit.first_pole_won["exploit_vs_explore"][0]
    assert won[3, 3] and not won[0, 0]


def test_ungrounded_instruction_leaves_only_exploration():
    maps = {"propositional": flat(1), "perspectival": grid(r00=1.0), "participatory": grid(r33=1.0)}
    b = balance(maps, {"participatory": np.zeros(1)}, Tensions(exploit=0.9, focus=1.0))
    assert b.relevance[0].argmax() == 0 and b.relevance[0, 3, 3] == 0


def test_particularize_scales_by_information_compress_ignores_it():
    maps = {"propositional": grid(r00=1.0), "perspectival": flat(1), "participatory": flat(0)}
    b = balance(maps, ONE, Tensions(particularize=1.0, focus=0.0))
    assert b.relevance[0, 0, 0] > 0 and b.relevance[0, 2, 2] == 0  # flat regions fully compressed
    c = balance(maps, ONE, Tensions(particularize=0.0, focus=0.0))
    np.testing.assert_allclose(c.relevance, c.relevance[0, 0, 0])  # information ignored
    won = b.first_pole_won["compress_vs_particularize"][0]
    assert not won[0, 0] and won[2, 2]  # particularize where information is above the mean


def test_diversify_lends_context_to_the_neighbours_of_a_peak():
    maps = {"propositional": flat(0.2), "perspectival": grid(r11=1.0), "participatory": flat(0)}
    b = balance(maps, ONE, Tensions(focus=0.5))
    rel, focus_won = b.relevance[0], b.first_pole_won["focus_vs_diversify"][0]
    ring = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert all(rel[p] == pytest.approx(0.5 * rel[1, 1]) and not focus_won[p] for p in ring)
    assert focus_won[1, 1] and rel[3, 3] == 0
    assert all(b.dominant[0][p] == WAYS.index("perspectival") for p in ring)  # lent by the peak
    assert not balance(maps, ONE, Tensions(focus=1.0)).relevance[0, 0, 0]  # full focus: no context


def test_focus_sharpens_without_reordering():
    maps = {"propositional": flat(1), "perspectival": np.linspace(0, 1, 16).reshape(1, 4, 4), "participatory": flat(0)}
    soft = balance(maps, ONE, Tensions(focus=0.0)).relevance.ravel()
    sharp = balance(maps, ONE, Tensions(focus=1.0)).relevance.ravel()
    assert np.all(np.diff(sharp) >= 0) and sharp.max() == pytest.approx(soft.max())
    assert sharp[8] / sharp[-1] < soft[8] / soft[-1]


def test_dominant_way_and_procedural():
    maps = {
        "propositional": grid(r00=1.0),
        "perspectival": grid(r00=0.5, r01=1.0),  # information alone is no interest: it only scales
        "participatory": grid(r02=1.0),
        "procedural": grid(r03=1.0),
    }
    b = balance(maps, {"participatory": np.ones(1), "procedural": np.ones(1)}, Tensions(focus=1.0))
    assert [WAYS[i] if i >= 0 else "none" for i in b.dominant[0, 0]] == list(WAYS)
    assert (b.dominant[0, 2:] == -1).all()  # zero relevance: no dominant way


def test_blank_maps_give_zero_relevance_without_nan():
    b = balance({w: flat(0) for w in WAYS[:3]}, {}, Tensions())
    assert not b.relevance.any() and np.isfinite(b.relevance).all()


def test_images_are_independent_and_grids_of_any_size_work():
    rng = np.random.default_rng(0)
    maps = {w: rng.random((3, 16, 16)) for w in WAYS[:3]}
    strength = {"participatory": np.array([1.0, 0.3, 0.0])}
    full = balance(maps, strength, Tensions())
    one = balance({w: m[1:2] for w, m in maps.items()}, {"participatory": strength["participatory"][1:2]}, Tensions())
    np.testing.assert_array_equal(full.relevance[1:2], one.relevance)


def test_missing_maps_are_an_error():
    with pytest.raises(ConfigError, match="participatory"):
        balance({"propositional": flat(), "perspectival": flat()}, {}, Tensions())
