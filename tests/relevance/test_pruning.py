"""VisualTokenPruner on tiny random-initialised LLaVA and Qwen2-VL models (built from configs)."""

import logging

import numpy as np
import pytest
import torch

from arrcoc_steer.errors import ConfigError, UnknownNameError
from arrcoc_steer.relevance.pruning import VisualTokenPruner, _merge_into_kept

from .conftest import RED, scene

transformers = pytest.importorskip("transformers")
IMAGE = 500
TEXT = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def quiet():
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def tiny_llava(image_size: int):
    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=image_size, patch_size=4)  # fmt: skip
    config = transformers.LlavaConfig(vision_config=vision, text_config=transformers.LlamaConfig(**TEXT),
                                      image_token_index=IMAGE)  # fmt: skip
    return transformers.LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def qwen():
    torch.manual_seed(0)
    text = dict(TEXT, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2)  # fmt: skip
    config = transformers.Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE,
                                        video_token_id=IMAGE + 1, vision_start_token_id=IMAGE + 2)  # fmt: skip
    return transformers.Qwen2VLForConditionalGeneration(config).eval()


def llava_inputs(images):
    side = images[0].shape[0]
    n = (side // 4) ** 2
    row = torch.cat([torch.tensor([1]), torch.full((n,), IMAGE), torch.tensor([7, 8, 9, 10])])
    pixels = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return {"input_ids": torch.stack([row] * len(images)), "pixel_values": pixels}


def qwen_inputs(images):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    proc = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=16,
                                    max_pixels=128 * 128, do_resize=False)  # fmt: skip
    enc = proc(images=list(images), return_tensors="pt")
    n = int(enc["image_grid_thw"][0].prod()) // 4
    row = torch.cat([torch.tensor([IMAGE + 2]), torch.full((n,), IMAGE), torch.tensor([7, 8, 9])])
    ids = torch.stack([row] * len(images))
    return {"input_ids": ids, "pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"],
            "mm_token_type_ids": (ids == IMAGE).int()}  # fmt: skip


def lm_sequence_lengths(model):
    """Record the sequence length the language model receives on every call."""
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    return seen, hook


def red_block_image(side):
    img = scene(size=side)
    img[side - 20 : side - 4, 4:20] = RED  # bottom-left corner
    return img


@pytest.mark.parametrize("budget", [64, 100])
def test_llava_lm_sees_exactly_budget_image_tokens_and_generates(allocator, budget):
    model = tiny_llava(64)  # 16 x 16 = 256 image tokens
    img = red_block_image(64)
    pruner = VisualTokenPruner(model, budget, allocator=allocator)
    seen, hook = lm_sequence_lengths(model)
    try:
        out = pruner.generate(llava_inputs([img]), [img], "pick up the red block", max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert seen[0] == 1 + budget + 4 and seen[1:] == [1, 1]  # prefill, then one token per step
    assert out.shape == (1, 3)


def test_kept_tokens_cover_the_named_object(allocator):
    model = tiny_llava(64)
    img = red_block_image(64)  # block: rows 44..60, cols 4..20 -> token rows 11..14, cols 1..4
    pruned = VisualTokenPruner(model, 64, allocator=allocator).prepare(llava_inputs([img]), [img], "lift the red block")
    rows, cols = np.divmod(pruned.kept[0].numpy(), 16)
    block = {(r, c) for r in range(11, 15) for c in range(1, 5)}
    assert block <= set(zip(rows.tolist(), cols.tolist()))
    assert len(pruned.kept[0]) == 64 and pruned.kept[0].tolist() == sorted(pruned.kept[0].tolist())


def test_keeping_every_token_reproduces_the_models_own_generate(allocator, qwen):
    """B = all image tokens: our embedding path (and Qwen's M-RoPE positions) equal the model's."""
    llava = tiny_llava(32)  # 8 x 8 = 64 tokens
    img = red_block_image(32)
    inputs = llava_inputs([img])
    plain = llava.generate(**inputs, max_new_tokens=4, do_sample=False)
    pruner = VisualTokenPruner(llava, 64, allocator=allocator)
    pruned = pruner.generate(inputs, [img], "lift", max_new_tokens=4, do_sample=False)
    assert torch.equal(plain[:, -4:], pruned)
    imgs = [red_block_image(64), scene(size=64, seed=4)]  # 16 x 16 patches -> 8 x 8 = 64 merged tokens
    inputs = qwen_inputs(imgs)
    plain = qwen.generate(**inputs, max_new_tokens=4, do_sample=False)
    pruner = VisualTokenPruner(qwen, 64, allocator=allocator)
    pruned = pruner.generate(inputs, imgs, "lift", max_new_tokens=4, do_sample=False)
    assert torch.equal(plain[:, -4:], pruned)


def test_qwen2_vl_keeps_budget_tokens_with_their_mrope_positions(allocator, qwen):
    imgs = [red_block_image(128), scene(size=128, seed=5)]  # 32 x 32 patches -> 256 tokens each
    inputs = qwen_inputs(imgs)
    full, _ = qwen.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                        image_grid_thw=inputs["image_grid_thw"])  # fmt: skip
    pruner = VisualTokenPruner(qwen, 100, allocator=allocator)
    pruned = pruner.prepare(inputs, imgs, "lift the red block")
    assert pruned.inputs_embeds.shape[:2] == (2, 1 + 100 + 3) and pruned.position_ids.shape == (3, 2, 104)
    for row, kept in enumerate(pruned.kept):
        np.testing.assert_array_equal(pruned.position_ids[:, row, 1:101], full[:, row, 1 + kept])
        np.testing.assert_array_equal(pruned.position_ids[:, row, -3:], full[:, row, -3:])  # text keeps its place
    seen, hook = lm_sequence_lengths(qwen)
    try:
        out = qwen.generate(**pruned.kwargs, max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert seen[0] == 104 and out.shape == (2, 3)


def test_merge_mode_averages_dropped_tokens_into_the_most_similar_kept():
    rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]])
    keep = torch.tensor([[True, True, False, False]])
    merged = _merge_into_kept(rows, keep)[0]
    torch.testing.assert_close(merged[0], torch.tensor([0.95, 0.05]))
    torch.testing.assert_close(merged[1], torch.tensor([0.05, 0.95]))


def test_merge_mode_runs_end_to_end(allocator):
    model = tiny_llava(64)
    img = red_block_image(64)
    inputs = llava_inputs([img])
    keep = VisualTokenPruner(model, 64, allocator=allocator).prepare(inputs, [img], "lift the red block")
    merge = VisualTokenPruner(model, 64, mode="merge", allocator=allocator).prepare(inputs, [img], "lift the red block")
    assert torch.equal(keep.kept[0], merge.kept[0]) and merge.inputs_embeds.shape == keep.inputs_embeds.shape
    assert not torch.allclose(keep.inputs_embeds, merge.inputs_embeds)
    assert model.generate(**merge.kwargs, max_new_tokens=2, do_sample=False).shape == (1, 2)


def test_caller_relevance_maps_decide_the_kept_tokens():
    model = tiny_llava(64)
    img = scene(size=64)
    relevance = np.zeros((16, 16))
    relevance[:8, :8] = 1.0  # only the top-left quarter matters (on the 16 x 16 token grid)
    pruned = VisualTokenPruner(model, 64).prepare(llava_inputs([img]), relevance=[relevance])
    rows, cols = np.divmod(pruned.kept[0].numpy(), 16)
    assert rows.max() < 8 and cols.max() < 8  # all 64 kept tokens in the top-left 8 x 8 tokens


def test_bad_inputs_are_errors(allocator):
    model = tiny_llava(32)  # 64 image tokens
    img = scene(size=32)
    with pytest.raises(ConfigError, match="exceeds the 64 image tokens"):
        VisualTokenPruner(model, 100, allocator=allocator).prepare(llava_inputs([img]), [img], "lift")
    with pytest.raises(ConfigError, match="budget"):
        VisualTokenPruner(model, 32)
    with pytest.raises(UnknownNameError, match="Did you mean 'merge'"):
        VisualTokenPruner(model, 64, mode="merger")
    with pytest.raises(ConfigError, match="needs `images`"):
        VisualTokenPruner(model, 64).prepare(llava_inputs([img]))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(UnknownNameError, match="VLM architecture"):
        VisualTokenPruner(gpt2, 64)
