"""The neuron atlas: exact top-k projections, options, caching by weights hash, reading."""

import json

import pytest
import torch

from arrcoc_steer.atlas import NeuronAtlas, grouped_topk
from arrcoc_steer.errors import CheckpointError, ConfigError
from arrcoc_steer.models import Adapter
from arrcoc_steer.models.tiny import tiny_model


def brute_force(model, basis="auto", cosine=False, gain=False, k=10, largest=True):
    adapter = Adapter(model)
    _, b = adapter.basis(basis)
    out_ids, out_scores = [], []
    for layer in range(adapter.spec.n_layers):
        v = adapter.value_vectors(layer).float()
        if gain:
            v = v * adapter.final_norm_gain()
        bb = b.float()
        if cosine:
            v = v / v.norm(dim=1, keepdim=True)
            bb = bb / bb.norm(dim=1, keepdim=True).clamp_min(1e-12)  # the padding row is zero
        s = v @ bb.T
        top = s.topk(k, dim=1, largest=largest)
        out_ids.append(top.indices)
        out_scores.append(top.values)
    return torch.stack(out_ids), torch.stack(out_scores)


@pytest.mark.parametrize("rows,cols,k", [(5, 640, 3), (33, 64 * 40, 10), (7, 64 * 9, 2)])
def test_grouped_topk_equals_torch_topk(rows, cols, k):
    scores = torch.randn(rows, cols)
    scores[0, :5] = 9.0  # ties inside one group
    vals, ids = grouped_topk(scores, k)
    ref = scores.topk(k, dim=1)
    torch.testing.assert_close(vals, ref.values)
    assert torch.equal(scores.gather(1, ids), vals)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "openvla"])
def test_atlas_matches_the_brute_force_projection(arch):
    model = tiny_model(arch)
    atlas = NeuronAtlas.build(model, top_k=10, progress=False)
    ids, scores = brute_force(model)
    torch.testing.assert_close(atlas.scores, scores, rtol=1e-5, atol=1e-5)
    assert (atlas.token_ids == ids).float().mean() > 0.999  # equal up to exact ties


def test_options_cosine_norm_weighting_and_both_signs():
    model = tiny_model("gemma")
    model.model.norm.weight.data.uniform_(-0.5, 0.5)  # a non-trivial gain (1 + w)
    atlas = NeuronAtlas.build(model, top_k=5, score="cosine", norm_weighting=True, both_signs=True,
                              progress=False)
    _, top = brute_force(model, cosine=True, gain=True, k=5)
    _, bottom = brute_force(model, cosine=True, gain=True, k=5, largest=False)
    torch.testing.assert_close(atlas.scores, top, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(atlas.bottom_scores, bottom, rtol=1e-5, atol=1e-5)
    assert atlas.meta["basis"] == "embed" and atlas.meta["score"] == "cosine"


def test_norm_weighting_without_a_final_norm_is_an_error():
    with pytest.raises(ConfigError, match="no final norm"):
        NeuronAtlas.build(tiny_model("bert"), norm_weighting=True, progress=False)


def test_chunk_size_does_not_change_the_result():
    model = tiny_model("llama")
    a = NeuronAtlas.build(model, top_k=4, progress=False)
    b = NeuronAtlas.build(model, top_k=4, chunk_size=7, progress=False)
    torch.testing.assert_close(a.scores, b.scores)  # BLAS blocking may differ in the last bit
    assert (a.token_ids == b.token_ids).float().mean() > 0.999


def test_save_load_round_trip(tmp_path):
    atlas = NeuronAtlas.build(tiny_model("openvla"), top_k=3, both_signs=True, progress=False)
    path = atlas.save(tmp_path / "atlas.safetensors")
    again = NeuronAtlas.load(path, expect_hash=atlas.weights_hash)
    assert torch.equal(again.token_ids, atlas.token_ids) and torch.equal(again.bottom_scores, atlas.bottom_scores)
    assert again.meta == atlas.meta and again.vocab == atlas.vocab
    with pytest.raises(CheckpointError, match="other weights"):
        NeuronAtlas.load(path, expect_hash="0" * 32)


def test_a_sidecar_from_another_atlas_is_detected(tmp_path):
    a = NeuronAtlas.build(tiny_model("llama", seed=0), top_k=3, progress=False)
    b = NeuronAtlas.build(tiny_model("llama", seed=1), top_k=3, progress=False)
    a.save(tmp_path / "a.safetensors")
    b.save(tmp_path / "b.safetensors")
    (tmp_path / "a.json").write_text((tmp_path / "b.json").read_text())
    with pytest.raises(CheckpointError, match="do not belong together"):
        NeuronAtlas.load(tmp_path / "a.safetensors")


def test_cache_is_reused_for_the_same_weights_and_rebuilt_when_stale(tmp_path, monkeypatch):
    model = tiny_model("llama")
    first = NeuronAtlas.build(model, top_k=3, cache=tmp_path, progress=False)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("llama-2x192-unembed-dot")

    import arrcoc_steer.atlas as atlas_module
    with monkeypatch.context() as m:  # a cache hit must not project anything
        m.setattr(atlas_module, "_Projector", None)
        cached = NeuronAtlas.build(model, top_k=3, cache=tmp_path, progress=False)
    assert torch.equal(cached.token_ids, first.token_ids)

    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[:, 0] += 1.0  # one value vector changes
    with pytest.raises(CheckpointError, match="stale atlas cache"):
        NeuronAtlas.build(model, top_k=3, cache=tmp_path, strict=True, progress=False)
    with pytest.warns(UserWarning, match="stale"):
        rebuilt = NeuronAtlas.build(model, top_k=3, cache=tmp_path, progress=False)
    assert rebuilt.weights_hash != first.weights_hash
    assert json.loads(files[0].with_suffix(".json").read_text())["weights_hash"] == rebuilt.weights_hash


def test_action_bins_are_decoded_readably():
    model = tiny_model("openvla")
    atlas = NeuronAtlas.build(model, top_k=3, progress=False)
    assert atlas.vocab[31999] == "[bin 0: -1.00]" and atlas.vocab[31744] == "[bin 254: +1.00]"
    with torch.no_grad():  # a neuron that writes exactly the unembedding of action token 31900
        model.language_model.model.layers[0].mlp.down_proj.weight[:, 5] = model.language_model.lm_head.weight[31900] * 10
    atlas = NeuronAtlas.build(model, top_k=3, progress=False)
    assert atlas.tokens(0, 5)[0] == "[bin 99: -0.22]"
    assert "[bin 99: -0.22]" in atlas.describe(0, 5)


def _synthetic(token_ids, action_ids=(), vocab=None):
    ids = torch.tensor(token_ids, dtype=torch.int32)
    meta = dict(arch="toy", n_layers=ids.shape[0], d_ff=ids.shape[1], vocab_size=10, basis="embed",
                score="dot", top_k=ids.shape[2], weights_hash="h" * 32, action_token_ids=list(action_ids))
    vocab = vocab or [f"w{i}" for i in range(10)]
    return NeuronAtlas(ids, torch.ones(ids.shape), meta, vocab)


def test_action_fraction_counts_neurons_whose_top_tokens_are_mostly_action_bins():
    # layer 0: [all action, 2/4 action, none]; layer 1: [3/4 action, none, none]
    atlas = _synthetic([[[7, 8, 9, 7], [7, 8, 1, 2], [1, 2, 3, 4]],
                        [[7, 8, 9, 1], [1, 2, 3, 4], [1, 1, 2, 2]]], action_ids=(7, 8, 9))
    assert atlas.action_fraction(k=4) == pytest.approx(2 / 6)
    assert atlas.action_fraction(k=4, per_layer=True).tolist() == pytest.approx([1 / 3, 1 / 3])
    with pytest.raises(ConfigError, match="no action tokens"):
        _synthetic([[[1, 2]]]).action_fraction()


def test_search_ranks_by_position_in_the_top_k():
    vocab = ["a", " slow", "##slow", "Slowly", "b", "c", "d", "e", "f", "g"]
    atlas = _synthetic([[[1, 4, 5], [4, 5, 1], [4, 5, 6]], [[5, 2, 4], [3, 4, 5], [6, 7, 8]]], vocab=vocab)
    hits = atlas.search("slow")
    assert [h.flat for h in hits] == [(0, 0), (1, 0), (0, 1)]  # rank 0 beats rank 1 beats rank 2
    assert hits[0].matched == (" slow",) and hits[0].score == pytest.approx(1.0)
    # layer 1: "Slowly" at rank 0 (1.0) beats "##slow" at rank 1 (2/3); word pieces count too
    assert [h.flat for h in atlas.search(["slow", "slowly"], layers=[1])] == [(1, 1), (1, 0)]


def test_reading_validates_indices():
    atlas = _synthetic([[[1, 2]]])
    with pytest.raises(ConfigError, match="layer 1 is out of range"):
        atlas.tokens(1, 0)
    with pytest.raises(ConfigError, match="neuron 3 is out of range"):
        atlas.tokens(0, 3)
    with pytest.raises(ConfigError, match="both_signs"):
        atlas.top(0, 0, sign=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_atlas_matches_cpu():
    model = tiny_model("openvla")
    cpu = NeuronAtlas.build(model, top_k=5, progress=False)
    gpu = NeuronAtlas.build(model.cuda(), top_k=5, dtype=torch.float32, progress=False)
    assert gpu.weights_hash == cpu.weights_hash
    torch.testing.assert_close(gpu.scores, cpu.scores, rtol=1e-4, atol=1e-5)
    assert (gpu.token_ids == cpu.token_ids).float().mean() > 0.99
