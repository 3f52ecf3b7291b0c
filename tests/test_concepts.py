"""Concepts: keyword search in the real MiniLM atlas, clustering, YAML dictionaries."""

import pytest
import torch

from arrcoc_steer.atlas import NeuronAtlas
from arrcoc_steer.concepts import (ConceptSet, ModelRef, cluster_vectors, find_concept,
                                   load_concepts, save_concepts)
from arrcoc_steer.errors import ConfigError, SteeringError, UnknownNameError
from arrcoc_steer.models.tiny import load_minilm, tiny_model


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    model, tokenizer = load_minilm()
    atlas = NeuronAtlas.build(model, tokenizer=tokenizer, progress=False,
                              cache=tmp_path_factory.mktemp("atlas"))
    return model, atlas


def test_minilm_atlas_has_the_slow_neuron_of_layer_3(minilm):
    _, atlas = minilm
    assert atlas.tokens(3, 1523, 2) == ["slowing", "slow"]


def test_find_concept_expands_keywords_and_ranks_neurons(minilm):
    model, atlas = minilm
    slow = find_concept(atlas, "slow", model, against="fast", top_n=8)
    expanded = dict(slow.expanded)
    assert {"slower", "slowing", "slowly"} <= set(expanded) and "fast" not in expanded
    assert (3, 1523) in slow.neurons[:2]
    assert list(slow.scores) == sorted(slow.scores, reverse=True) and slow.scores[-1] > 0
    assert slow.keywords == ("slow",) and slow.against == ("fast",)
    assert slow.model == ModelRef("bert", 6, 1536, atlas.weights_hash)
    assert sorted(i for c in slow.clusters for i in c) == list(range(len(slow)))
    assert "L3 N1523" in slow.describe(atlas)


def test_against_words_count_negatively(minilm):
    model, atlas = minilm
    plain = find_concept(atlas, "fast", model, top_n=50, expand=0)
    contrasted = find_concept(atlas, "fast", model, against="slow", top_n=50, expand=0)
    slow_readers = {n for n in plain.neurons if "slow" in atlas.tokens(*n)}
    assert not slow_readers & set(contrasted.neurons)


def test_layers_restrict_the_search(minilm):
    model, atlas = minilm
    up = find_concept(atlas, "up", model, layers=[4, 5], top_n=5)
    assert set(up.layers) <= {4, 5} and len(up) > 0


def test_a_word_outside_the_vocabulary_names_the_nearest_tokens(minilm):
    model, atlas = minilm
    with pytest.raises(UnknownNameError, match="Did you mean 'fast'"):
        find_concept(atlas, "fastt", model)


def test_an_atlas_of_another_model_is_refused(minilm):
    _, atlas = minilm
    with pytest.raises(SteeringError, match="built for bert .6 layers x 1536"):
        find_concept(atlas, "slow", tiny_model("llama"))


def test_mutual_knn_clusters_recover_planted_groups():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    vectors = torch.stack([a, a + 0.1 * torch.randn(64, generator=g), b,
                           b + 0.1 * torch.randn(64, generator=g), a + 0.1 * torch.randn(64, generator=g),
                           torch.randn(64, generator=g)])
    assert cluster_vectors(vectors, k=2, threshold=0.5) == ((0, 1, 4), (2, 3), (5,))
    assert cluster_vectors(torch.zeros(0, 8)) == ()


def _concept(**kw):
    base = dict(name="slow", neurons=((3, 1523), (1, 1419), (1, 7)), scores=(1.5, 1.4, 0.2),
                clusters=((0, 1), (2,)), keywords=("slow",), against=("fast",),
                expanded=(("slower", 0.72),), model=ModelRef("bert", 6, 1536, "ab" * 16))
    return ConceptSet(**(base | kw))


@pytest.mark.parametrize("flat", [False, True])
def test_yaml_round_trip(tmp_path, flat):
    concepts = [_concept(), _concept(name="up", neurons=((4, 135),), scores=(1.9,), clusters=((0,),))]
    path = save_concepts(tmp_path / "concepts.yaml", concepts, flat=flat)
    assert ("flat:" in path.read_text()) == flat
    assert load_concepts(path) == {c.name: c for c in concepts}


def test_the_papers_flat_index_dictionary_loads(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text("d_ff: 11008\nslow: [34176, 11009]\nup: [[31, 5]]\n")
    concepts = load_concepts(path)
    assert concepts["slow"].neurons == ((3, 1152), (1, 1))  # 34176 = 3 * 11008 + 1152
    assert concepts["up"].neurons == ((31, 5),)
    assert _concept().flat() == [3 * 1536 + 1523, 1 * 1536 + 1419, 1536 + 7]
    path.write_text("slow: [34176]\n")
    with pytest.raises(ConfigError, match="d_ff"):
        load_concepts(path)
    assert load_concepts(path, d_ff=11008)["slow"].neurons == ((3, 1152),)


def test_one_cluster_is_a_concept_of_its_own():
    part = _concept().cluster(0)
    assert part.name == "slow/0" and part.neurons == ((3, 1523), (1, 1419)) and part.scores == (1.5, 1.4)


def test_concept_validation():
    with pytest.raises(ConfigError, match="twice"):
        _concept(neurons=((1, 2), (1, 2), (0, 0)))
    with pytest.raises(ConfigError, match="outside bert"):
        _concept(neurons=((6, 1), (1, 2), (0, 0)))
    with pytest.raises(ConfigError, match="3 scores for 1 neurons"):
        _concept(neurons=((1, 2),), clusters=())
