import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from arrcoc_steer.errors import CheckpointError, ConfigError
from arrcoc_steer.models.minivla import ATTENTION, PUSH_GEOMETRY_DIM, MiniVLA, MiniVLAConfig, push_geometry, sdpa_float32
from tests.models.conftest import make_observation

INSTRUCTION = "put the red block in the tray"


def test_predicts_a_valid_action_at_every_budget(policy):
    obs = make_observation(np.random.default_rng(0))
    for budget in (64, 100, 256, 400):
        action = policy.predict_action(obs, INSTRUCTION, budget=budget)
        assert action.shape == (7,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)


def test_batched_call_matches_single_calls(policy):
    rng = np.random.default_rng(1)
    obs = make_observation(rng, batch=3)
    texts = [INSTRUCTION, "lift the green block", "push the red block onto the green zone"]
    batched = policy.predict_action(obs, texts, budget=64)
    singles = [policy.predict_action({k: v[i] for k, v in obs.items()}, texts[i], budget=64) for i in range(3)]
    assert batched.shape == (3, 7)
    # Padding the shorter instructions must not change their actions (bins can flip only at ties).
    assert np.mean(np.isclose(batched, np.stack(singles), atol=1e-6)) > 0.95


def test_observe_reads_a_given_pointer_in_place_of_its_own(policy):
    obs = make_observation(np.random.default_rng(2))
    out, _, _ = policy.observe(obs, INSTRUCTION, budget=64)
    same, _, _ = policy.observe(obs, INSTRUCTION, budget=64, pointer=out.pointer)
    torch.testing.assert_close(same.action_logits, out.action_logits)  # its own pointer: the same actions
    moved = out.pointer.clone()
    moved[:, 0, 2, :2] += 0.3  # the destination, seen elsewhere
    probe, _, _ = policy.observe(obs, INSTRUCTION, budget=64, pointer=moved)
    assert not torch.allclose(probe.action_logits, out.action_logits)
    with pytest.raises(ConfigError, match="pointer must have shape"):
        policy.observe(obs, INSTRUCTION, budget=64, pointer=out.pointer[:, :1])


def test_the_allocation_reaches_the_visual_tokens(policy):
    """A relevance allocation is a real input: changing it changes the logits."""
    rng = np.random.default_rng(2)
    obs = make_observation(rng)
    grid = policy.region_grid
    images, state, _ = policy._check_observation(obs)
    ids, mask = policy.tokenize([INSTRUCTION])
    with torch.no_grad():
        a = policy(images, state, ids, mask, grid.uniform(100)[None]).action_logits
        b = policy(images, state, ids, mask, grid.allocate(np.arange(32.0), 100)[None]).action_logits
    assert not torch.allclose(a, b)


def test_token_roles_cover_the_sequence_during_the_call(policy):
    seen = {}

    def grab(module, args):
        seen.update({k: v.clone() for k, v in policy.token_roles().items()})

    handle = policy.backbone.encoder.layer[0].register_forward_pre_hook(grab)
    try:
        policy.predict_action(make_observation(np.random.default_rng(3)), INSTRUCTION, budget=64)
    finally:
        handle.remove()
    n_text = len(policy.tokenize([INSTRUCTION])[0][0])
    assert seen["text"].sum() == n_text and seen["image"].sum() == 64 and seen["action"].sum() == 7
    total = sum(v.long() for v in seen.values())
    assert torch.all(total == 1)  # every position has exactly one role
    assert policy.token_roles() is None  # cleared after the call


def test_empty_and_unknown_word_instructions_still_give_actions(policy):
    obs = make_observation(np.random.default_rng(4))
    for text in ("", "zxqv blorfing 🤖 ქართული"):
        assert np.all(np.isfinite(policy.predict_action(obs, text, budget=64)))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o: o.pop("wrist"), "missing"),
        (lambda o: o.update(wrist=o["wrist"][:64]), "shape"),
        (lambda o: o.update(agentview=o["agentview"].astype(np.float32)), "uint8"),
        (lambda o: o.update(state=np.full(9, np.nan, np.float32)), "NaN"),
        (lambda o: o.update(state=np.zeros(5, np.float32)), "state"),
    ],
)
def test_bad_observations_are_rejected(policy, change, message):
    obs = make_observation(np.random.default_rng(5))
    change(obs)
    with pytest.raises(ConfigError, match=message):
        policy.predict_action(obs, INSTRUCTION, budget=64)


@pytest.mark.parametrize("budget", [0, 63, 401, 1000, 64.5])
def test_budget_outside_the_range_is_rejected(policy, budget):
    with pytest.raises(ConfigError, match="budget"):
        policy.predict_action(make_observation(np.random.default_rng(6)), INSTRUCTION, budget=budget)


def test_allocation_must_match_budget_and_grid(policy):
    obs = make_observation(np.random.default_rng(7))
    alloc = policy.region_grid.uniform(100)
    with pytest.raises(ConfigError, match="budget"):
        policy.predict_action(obs, INSTRUCTION, budget=64, allocation=alloc)
    with pytest.raises(ConfigError, match="shape"):
        policy.predict_action(obs, INSTRUCTION, allocation=alloc[:, :8])


def test_save_and_load_round_trip(policy, tmp_path):
    original = policy.head_bias.detach().clone()
    try:
        with torch.no_grad():
            policy.head_bias.normal_()  # make the checkpoint differ from a fresh model
        policy.save_pretrained(tmp_path)
        loaded = MiniVLA.from_pretrained(tmp_path)
        obs = make_observation(np.random.default_rng(8))
        np.testing.assert_array_equal(
            loaded.predict_action(obs, INSTRUCTION, budget=64), policy.predict_action(obs, INSTRUCTION, budget=64)
        )
    finally:
        with torch.no_grad():
            policy.head_bias.copy_(original)
    # Only trained tensors are saved; the base MiniLM comes from the package.
    assert (tmp_path / "model.safetensors").stat().st_size < 25e6


def test_checkpoint_that_does_not_match_its_config_is_refused(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["cell_dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        MiniVLA.from_pretrained(tmp_path)


def test_checkpoint_missing_a_tensor_is_refused(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("head_bias")
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="head_bias"):
        MiniVLA.from_pretrained(tmp_path)


def test_value_vectors_are_frozen_and_adapters_start_at_zero(policy):
    """Fine-tuning must not rewrite the FFN value vectors the atlas reads."""
    for layer in policy.backbone.encoder.layer:
        assert not layer.output.dense.weight.requires_grad
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert not any("output.dense" in n and "attention" not in n for n in trainable)


def test_local_mean_decoding_interpolates_between_neighbouring_bins(policy):
    logits = torch.full((1, 7, 256), -30.0)
    logits[0, :, 100] = logits[0, :, 101] = 5.0  # two equally likely neighbours
    logits[0, :, 10] = 4.9  # a far mode, outside the window
    centers = policy.action_tokenizer.centers
    policy.config.decode = "argmax"
    np.testing.assert_allclose(policy.decode_actions(logits)[0], centers[100], atol=1e-6)
    policy.config.decode = "local_mean"
    try:
        np.testing.assert_allclose(policy.decode_actions(logits)[0], (centers[100] + centers[101]) / 2, atol=1e-5)
    finally:
        policy.config.decode = "argmax"


def test_mean_decoding_keeps_a_share_of_the_second_mode(policy):
    """Where demonstrations are ambiguous (wait vs lift), the expectation moves toward the minority mode."""
    logits = torch.full((1, 7, 256), -30.0)
    logits[0, :, 128] = 2.0  # "wait": about 73% of the mass
    logits[0, :, 250] = 1.0  # "lift": about 27%
    centers = policy.action_tokenizer.centers
    policy.config.decode = "mean"
    try:
        p = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
        np.testing.assert_allclose(policy.decode_actions(logits)[0], p[0] * centers[128] + p[1] * centers[250], atol=1e-4)
    finally:
        policy.config.decode = "argmax"
    np.testing.assert_allclose(policy.decode_actions(logits)[0], centers[128], atol=1e-6)


def test_mean_decoding_is_float32_inside_a_bf16_autocast(policy):
    logits = torch.randn(2, 7, 256)
    policy.config.decode = "mean"
    try:
        plain = policy.decode_actions(logits)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = policy.decode_actions(logits)
    finally:
        policy.config.decode = "argmax"
    np.testing.assert_array_equal(autocast, plain)


def test_attention_runs_in_float32_inside_a_bf16_autocast(policy):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    assert policy.backbone.config._attn_implementation == ATTENTION
    module = policy.backbone.encoder.layer[0].attention.self
    q, k, v = torch.randn(3, 2, 12, 50, 32, generator=torch.Generator().manual_seed(0)).unbind(0)
    exact = sdpa_attention_forward(module, q, k, v, None)[0]
    plain = sdpa_float32(module, q, k, v, None)[0]
    torch.testing.assert_close(plain, exact, rtol=0, atol=0)  # inference (float32): unchanged, bit for bit
    half = [x.bfloat16() for x in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = sdpa_float32(module, *half, None)[0]
        bf16 = sdpa_attention_forward(module, *half, None)[0]
    reference = sdpa_attention_forward(module, *(x.float() for x in half), None)[0].bfloat16()
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)  # float32 math, rounded once at the end
    assert not torch.equal(bf16, reference)  # what the autocast alone would have computed


def test_an_unknown_decoding_is_refused():
    from arrcoc_steer.models.minivla import MiniVLAConfig

    with pytest.raises(ConfigError, match="local_mean"):
        MiniVLAConfig(decode="sample")


def test_a_holding_hand_opens_once_p_open_passes_the_release_threshold(policy):
    """The release decision: a minority P(open) opens the hand only when its fingers are closed."""
    logits = torch.full((3, 7, 256), -30.0)
    logits[:, :6, 128] = 0.0
    logits[:, 6, 255] = 0.0  # close
    logits[:, 6, 0] = np.log(0.2 / 0.8)  # open, P = 0.2
    logits[2, 6, 0] = np.log(0.05 / 0.95)  # P(open) = 0.05, under the threshold
    state = torch.zeros(3, 9)
    state[1, 7:9] = 0.04  # fingers open: nothing held, nothing to release
    policy.config.decode, policy.config.release_threshold = "mean", 0.1
    try:
        actions = policy.decode_actions(logits, state)
    finally:
        policy.config.decode, policy.config.release_threshold = "argmax", None
    assert actions[0, 6] == -1.0  # holding, P(open) 0.2 > 0.1: open fully
    assert actions[1, 6] == pytest.approx(0.6, abs=0.02)  # not holding: the plain mean (0.8 - 0.2)
    assert actions[2, 6] == pytest.approx(0.9, abs=0.02)  # holding, P(open) 0.05: keep squeezing
    np.testing.assert_array_equal(actions[:, :6], policy.decode_actions(logits)[:, :6])  # other dims untouched
    with pytest.raises(ConfigError, match="release_threshold"):
        type(policy.config)(release_threshold=1.5)


def test_release_calibration_picks_the_threshold_that_separates_held_out_frames():
    from arrcoc_steer.models.gripper import best_threshold

    p_open = np.r_[np.full(90, 0.01), np.full(10, 0.07), np.full(5, 0.15), np.full(3, 0.2)]
    is_open = np.r_[np.zeros(100, bool), np.ones(8, bool)]
    result = best_threshold(p_open, is_open)
    assert 0.07 <= result["threshold"] < 0.15 and result["balanced_accuracy"] == 1.0
    assert result["frames_open"] == 8 and result["frames_close"] == 100
    with pytest.raises(ValueError, match="both kinds"):
        best_threshold(p_open[:100], is_open[:100])


def test_an_off_square_grasp_counts_as_closed_fingers():
    """A block grasped askew holds the fingers wider than a face-on grasp; the release rule must still
    see a closed hand, or the policy carries the block to its destination and never lets go."""
    import envs
    from envs.expert import ScriptedExpert
    from arrcoc_steer.models.minivla import fingers_closed

    class AskewExpert(ScriptedExpert):
        @staticmethod
        def _grasp_yaw(u, obj):
            return ScriptedExpert._grasp_yaw(u, obj) + 0.5  # ~29 degrees off the block's faces

    env = envs.make("LiftRedBlock", render_cameras=False)
    try:
        env.reset(seed=0)
        expert, held = AskewExpert(env), []
        for _ in range(150):
            obs, _, terminated, truncated, info = env.step(expert.act())
            if expert.phase in ("lift", "hold_up"):
                held.append(obs["state"])
            if terminated or truncated:
                break
    finally:
        env.close()
    assert info["success"] and len(held) > 5
    held = np.stack(held)
    assert held[:, 7:9].mean() > 0.024  # wider than a face-on grasp (0.019): the case being tested
    assert fingers_closed(held).all()
    open_hand = held.copy()
    open_hand[:, 7:9] = 0.045
    assert not fingers_closed(open_hand).any()


def test_grounding_film_starts_as_a_no_op_and_survives_a_round_trip(tmp_path):
    model = MiniVLA(MiniVLAConfig()).eval()
    obs = make_observation(np.random.default_rng(11))
    linear = model.observe(obs, INSTRUCTION, budget=100)[0]
    model.add_grounding_film()
    assert model.config.grounding == "film"
    added = model.observe(obs, INSTRUCTION, budget=100)[0]
    torch.testing.assert_close(added.grounding_logits, linear.grounding_logits)  # zero-initialised output
    with torch.no_grad():
        model.grounding_film.mlp[-1].weight.normal_()
    trained = model.observe(obs, INSTRUCTION, budget=100)[0]
    assert (trained.grounding_logits - linear.grounding_logits).abs().max() > 0.1  # it is wired in
    other = model.observe(obs, "put the blue block in the tray", budget=100)[0]
    assert not torch.allclose(other.grounding_logits, trained.grounding_logits)  # and reads the words
    model.save_pretrained(tmp_path)
    loaded = MiniVLA.from_pretrained(tmp_path)
    assert loaded.config.grounding == "film"
    torch.testing.assert_close(loaded.observe(obs, INSTRUCTION, budget=100)[0].grounding_logits, trained.grounding_logits)


def test_unknown_grounding_kind_is_refused():
    with pytest.raises(ConfigError, match="grounding must be one of"):
        MiniVLAConfig(grounding="attention")


def test_push_geometry_reads_direction_and_distance_off_the_pointer():
    pointer = torch.zeros(2, 2, 3, 3)
    pointer[0, :, 1] = torch.tensor([0.2, 0.5, 1.0])  # target
    pointer[0, :, 2] = torch.tensor([0.5, 0.9, 1.0])  # destination: 0.3 right, 0.4 down
    pointer[1] = pointer[0]
    pointer[1, 1, 2, 2] = 0.0  # camera 1 of sample 1 does not see the destination
    pointer[1, 0, 1, 2] = 0.25  # and camera 0 sees the target faintly, as a located block often is
    g = push_geometry(pointer)
    assert g.shape == (2, 2, PUSH_GEOMETRY_DIM)
    torch.testing.assert_close(g[0, 0], torch.tensor([0.6, 0.8, 0.6**2 - 0.8**2, 2 * 0.6 * 0.8, 0.5]))
    torch.testing.assert_close(g[1, 0], g[0, 0])  # at full strength all the same
    assert g[1, 1].abs().max() == 0  # says nothing
    flipped = pointer.clone()
    flipped[..., [1, 2], :2] = pointer[..., [2, 1], :2]  # the push the other way: same yaw, opposite side
    h = push_geometry(flipped)
    torch.testing.assert_close(h[0, 0, :2], -g[0, 0, :2])
    torch.testing.assert_close(h[0, 0, 2:], g[0, 0, 2:])


def test_push_geometry_starts_as_a_no_op_and_survives_a_round_trip(tmp_path):
    model = MiniVLA(MiniVLAConfig()).eval()
    obs = make_observation(np.random.default_rng(12))
    before = model.observe(obs, INSTRUCTION, budget=100)[0]
    model.add_push_geometry()
    model.add_push_geometry()  # a second call changes nothing
    assert model.config.push_geometry
    added = model.observe(obs, INSTRUCTION, budget=100)[0]
    torch.testing.assert_close(added.action_logits, before.action_logits)  # zero-initialised columns
    with torch.no_grad():
        model.pointer_proj[0].weight[:, -PUSH_GEOMETRY_DIM * model.grid_cameras :].normal_()
    wired = model.observe(obs, INSTRUCTION, budget=100)[0]
    assert (wired.action_logits - before.action_logits).abs().max() > 1e-3  # the head reads it
    model.save_pretrained(tmp_path)
    loaded = MiniVLA.from_pretrained(tmp_path)
    assert loaded.config.push_geometry
    torch.testing.assert_close(loaded.observe(obs, INSTRUCTION, budget=100)[0].action_logits, wired.action_logits)
