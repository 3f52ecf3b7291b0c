import numpy as np
import pytest

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.relevance import Concept, Grounder, Palette


def weights(query, role="target"):
    palette = Palette.default()
    w = getattr(query, role)
    return {palette.names[k]: round(float(w[k]), 2) for k in np.flatnonzero(w)}


@pytest.mark.parametrize(
    "rgb, name",
    [((220, 20, 20), "red"), ((110, 12, 12), "red"), ((20, 66, 235), "blue"), ((25, 184, 41), "green"),
     ((245, 214, 15), "yellow"), ((242, 122, 20), "orange"), ((115, 92, 71), "brown"),
     ((158, 153, 145), "gray"), ((237, 237, 237), "white"), ((38, 38, 43), "black")],
)  # fmt: skip
def test_palette_names_the_tabletop_colours(rgb, name):
    assert Palette.default().name_of(rgb) == name


def test_palette_label_is_a_vectorised_lookup():
    palette = Palette.default()
    img = np.array([[[220, 20, 20], [20, 66, 235]]], np.uint8)
    assert [palette.names[i] for i in palette.label(img)[0]] == ["red", "blue"]


@pytest.mark.parametrize("word", ["red", "crimson", "scarlet", "reddish", "reds", "RED"])
def test_red_words_ground_in_red(grounder, word):
    w = weights(grounder.query(f"pick up the {word} block"))
    assert list(w) == ["red"] and w["red"] >= 0.5  # exact descriptors 1.0, variants via MiniLM


def test_unrelated_words_ground_in_nothing(grounder):
    q = grounder.query("please do the thing quickly")
    assert not q.grounded and q.matches == ()


def test_roles_target_destination_and_clauses(grounder):
    q = grounder.query("put the red block in the tray, then the blue block on the plate")
    assert weights(q) == {"red": 1.0, "blue": 1.0}
    assert weights(q, "destination") == {"brown": 1.0, "white": 1.0}
    assert q.relation is None


def test_colour_is_more_specific_than_block(grounder):
    assert weights(grounder.query("lift the green cube")) == {"green": 1.0}
    assert len(weights(grounder.query("lift the cube"))) == 8  # any saturated colour


@pytest.mark.parametrize(
    "text, relation, anchor",
    [("pick up the block on the left and put it in the tray", "left", {}),
     ("place the rightmost block into the tray", "right", {}),
     ("place the block nearest to the camera into the tray", "front", {}),
     ("put the block closest to the tray in the tray", "near", {"brown": 1.0}),
     ("pick up the block nearest the tray", "near", {"brown": 1.0}),
     ("pick up the closest block", "front", {})],
)  # fmt: skip
def test_spatial_relations(grounder, text, relation, anchor):
    q = grounder.query(text)
    assert q.relation == relation and weights(q, "anchor") == anchor
    assert len(weights(q)) == 8  # the target is "a block", the relation picks which
    assert "on the left" not in text or not q.destination[Palette.default().index("red")]


def test_query_is_cached_per_instruction(grounder):
    assert grounder.query("lift the red block") is grounder.query("lift the red block")


def test_concepts_must_use_palette_colours():
    with pytest.raises(ConfigError, match="not in the palette"):
        Grounder(concepts=[Concept("cup", ("cup",), ("teal",))])
