import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file

from arrcoc_steer.errors import ConfigError
from arrcoc_steer.models.minivla import PUSH_GEOMETRY_DIM
from arrcoc_steer.regions import MAX_BUDGET, MIN_BUDGET, RegionGrid
from arrcoc_steer.train import POINTER_WEIGHT, TrainConfig, Trainer, sample_allocations, smoothed_targets
from tests.models.conftest import write_fake_episodes


def small_config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        data=(str(tmp_path / "demos"),), out=str(tmp_path / "run"), steps=4, batch_size=4,
        checkpoint_every=2, log_every=2, warmup=2, holdout_frac=0.25, low_budget_frac=1.0,
    )
    return TrainConfig(**{**base, **kw})


def test_resumed_run_equals_an_uninterrupted_run(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=4)
    straight = Trainer(small_config(tmp_path, out=str(tmp_path / "a")))
    straight.run()
    # The same run, stopped after 2 steps (the checkpoint), then resumed in a fresh process state.
    first = Trainer(small_config(tmp_path, out=str(tmp_path / "b"), steps=2))
    first.run()
    resumed = Trainer(small_config(tmp_path, out=str(tmp_path / "b"), steps=4))
    resumed.run()
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert resumed.step == 4
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert (tmp_path / "a" / "train_curve.png").stat().st_size > 1000


def test_init_fine_tunes_from_a_saved_model(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=4)
    base = Trainer(small_config(tmp_path, out=str(tmp_path / "base"), steps=2)).run()
    saved = load_file(base / "model.safetensors")
    tuned = Trainer(small_config(tmp_path, out=str(tmp_path / "tuned"), steps=2, init=str(base)))
    start = tuned.model.trainable_state_dict()
    for k in saved:  # starts from the saved weights, not a fresh initialisation
        torch.testing.assert_close(start[k].float(), saved[k].float(), msg=k)
    tuned.run()
    after = load_file(tmp_path / "tuned" / "model" / "model.safetensors")
    assert any(not torch.equal(after[k], saved[k]) for k in saved)  # and trains on
    assert tuned.model.config.extra["train_config"]["init"] == str(base)


def test_max_minutes_lowers_the_steps_to_what_the_timed_steps_leave_room_for(tmp_path, monkeypatch):
    import types

    import arrcoc_steer.train as train_module

    write_fake_episodes(tmp_path / "demos", n=2, length=4)
    clock = [0.0]
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    trainer = Trainer(small_config(tmp_path, steps=1000, batch_size=2, checkpoint_every=500, log_every=500,
                                   max_minutes=0.75))  # fmt: skip
    real_step = trainer.train_step

    def one_second_step():
        clock[0] += 1.0
        return real_step()

    trainer.train_step = one_second_step
    trainer.run()
    # 25 s spent, 1 s per step, 45 s budget: 20 s left, 95% of it = 19 more steps
    assert trainer.step == 44
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["steps"] == 44
    assert trainer.model.config.extra["train_config"]["steps"] == 44


def test_train_only_head_changes_the_head_and_nothing_upstream(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=4)
    trainer = Trainer(small_config(tmp_path, steps=2, train_only="head", lr=1e-2))
    before = {k: v.clone() for k, v in trainer.model.trainable_state_dict().items()}
    trainer.run()
    after = trainer.model.trainable_state_dict()
    head = [k for k in before if k.startswith(("head.", "head_bias", "pointer_proj."))]
    assert head and all(not torch.equal(before[k], after[k]) for k in head)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in head)  # vision, LoRA, token rows


def test_push_geometry_refit_widens_the_pointer_input_and_trains_it(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=4)
    trainer = Trainer(small_config(tmp_path, steps=3, train_only="head", head_cache=16, lr=1e-2, push_geometry=True))
    first = trainer.model.pointer_proj[0]
    geometry_columns = slice(first.in_features - PUSH_GEOMETRY_DIM * trainer.model.grid_cameras, None)
    assert first.weight[:, geometry_columns].abs().max() == 0  # added as a no-op
    model_dir = trainer.run()
    assert trainer.model.pointer_proj[0].weight[:, geometry_columns].abs().max() > 0  # and fitted
    assert json.loads((model_dir / "config.json").read_text())["push_geometry"] is True
    with pytest.raises(ConfigError, match="push_geometry"):
        small_config(tmp_path, train_only="grounding", push_geometry=True)


def test_train_only_grounding_adds_the_film_and_fits_it_on_the_grounding_losses_alone(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=4)
    trainer = Trainer(small_config(tmp_path, steps=2, train_only="grounding", lr=1e-2))
    assert trainer.model.grounding_film is not None
    _, stats = trainer.loss_on(np.arange(4), augment=True)
    assert stats["loss"] == pytest.approx(stats["grounding_loss"] + POINTER_WEIGHT * stats["pointer_l1"], rel=1e-5)
    before = {k: v.clone() for k, v in trainer.model.trainable_state_dict().items()}
    model_dir = trainer.run()
    after = trainer.model.trainable_state_dict()
    film = [k for k in before if k.startswith("grounding_film.")]
    assert film and any(not torch.equal(before[k], after[k]) for k in film)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in film)  # head, vision, LoRA, linear head
    assert json.loads((model_dir / "config.json").read_text())["grounding"] == "film"


def test_train_only_grounding_needs_grounding_labels(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=2, length=4)
    for path in (tmp_path / "demos").glob("*.safetensors"):
        with safe_open(str(path), "np") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys() if k != "grounding"}
            meta = f.metadata()
        save_numpy(arrays, str(path), metadata=meta)
    with pytest.raises(ConfigError, match="grounding labels"):
        Trainer(small_config(tmp_path, train_only="grounding"))


def test_training_reduces_the_loss_on_a_fixed_batch(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=2, length=4)
    trainer = Trainer(small_config(tmp_path, lr=3e-3, warmup=1, shift_px=0, bf16=False))
    rows = np.arange(4)
    before = trainer.loss_on(rows, augment=False)[0].item()
    for _ in range(15):
        loss, _ = trainer.loss_on(rows, augment=False)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    assert trainer.loss_on(rows, augment=False)[0].item() < before - 0.5


def test_grounding_labels_follow_the_pooling_of_each_token():
    """A token that averages cells of one class gets that class as its label."""
    from arrcoc_steer.train import grounding_loss, token_labels

    counts = torch.zeros(1, 512, 5)
    counts[0, :256, 2] = 64  # agentview: all target
    counts[0, 256:, 0] = 64  # wrist: all other
    pooling = torch.zeros(1, 2, 512)
    pooling[0, 0, :16] = 1 / 16  # token 0 pools agentview cells
    pooling[0, 1, 300:304] = 1 / 4  # token 1 pools wrist cells
    right = torch.full((1, 2, 5), -20.0)
    right[0, 0, 2] = right[0, 1, 0] = 20.0
    wrong = right.flip(1)
    labels = token_labels(pooling, counts)
    assert grounding_loss(right, labels) < 1e-6
    assert grounding_loss(wrong, labels) > 10


def test_pointer_loss_is_zero_at_the_true_centroid_and_grows_with_distance():
    from arrcoc_steer.train import pointer_loss, true_pointer

    counts = torch.zeros(1, 512, 5)
    counts[0, 16 * 4 + 8, 2] = 64  # agentview target in the cell at row 4, col 8
    counts[0, :, 0] += 64 - counts[0, :, 2]
    pointer = torch.zeros(1, 2, 3, 3)
    pointer[0, 0, 1, :2] = torch.tensor([8.5 / 16, 4.5 / 16])  # (x, y) of that cell's centre
    truth = true_pointer(counts, 2)
    assert truth[0, 0, 1].tolist() == pytest.approx([8.5 / 16, 4.5 / 16, 1.0])  # in view
    assert truth[0, 1, 1, 2] == 0  # the wrist camera does not see it
    assert pointer_loss(pointer, truth) < 1e-6
    pointer[0, 0, 1, 0] += 0.25
    assert pointer_loss(pointer, truth) == pytest.approx(0.125)  # mean over x, y


def test_teacher_forced_pointer_replaces_the_predicted_one_only_where_asked():
    import numpy as np

    from arrcoc_steer.models.minivla import MiniVLA
    from tests.models.conftest import make_observation

    model = MiniVLA().eval()
    obs = make_observation(np.random.default_rng(0), batch=2)
    images, state, _ = model._check_observation(obs)
    ids, mask = model.tokenize(["lift the red block"] * 2)
    alloc = np.stack([model.region_grid.uniform(64)] * 2)
    with torch.no_grad():
        free = model(images, state, ids, mask, alloc).action_logits
        forced = torch.rand(2, 2, 3, 3)
        out = model(images, state, ids, mask, alloc, (forced, torch.tensor([True, False]))).action_logits
    assert not torch.allclose(out[0], free[0])
    torch.testing.assert_close(out[1], free[1])


def test_allocations_spend_one_exact_budget_per_batch():
    grid, rng = RegionGrid(), np.random.default_rng(0)
    cfg = TrainConfig(low_budget_frac=0.5, uniform_frac=0.5)
    for _ in range(20):
        allocs = sample_allocations(grid, 8, rng, cfg)
        totals = allocs.sum((1, 2))
        assert len(set(totals)) == 1 and MIN_BUDGET <= totals[0] <= MAX_BUDGET
        assert allocs.min() >= 1 and allocs.max() <= grid.max_level


def test_smoothed_targets_are_distributions_peaked_at_the_bin():
    t = smoothed_targets(torch.tensor([[0, 100, 255]]), 256, 1.5)
    torch.testing.assert_close(t.sum(-1), torch.ones(1, 3))
    assert t.argmax(-1).tolist() == [[0, 100, 255]]


def test_invalid_training_config_is_rejected():
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="train_only"):
        TrainConfig(train_only="vision")
    with pytest.raises(ConfigError, match="max_minutes"):
        TrainConfig(max_minutes=-1)
    with pytest.raises(ConfigError, match="head_cache"):
        TrainConfig(head_cache=64)  # the backbone would train: its outputs cannot be cached
    with pytest.raises(ConfigError, match="carry_weight"):
        TrainConfig(carry_weight=0)


def test_release_calibration_writes_its_threshold_into_the_checkpoint(tmp_path):
    from arrcoc_steer.models.gripper import calibrate
    from arrcoc_steer.models.minivla import MiniVLA

    write_fake_episodes(tmp_path / "demos", n=4)
    model_dir = Trainer(small_config(tmp_path, steps=1, holdout_frac=0.5)).run()
    result = calibrate(model_dir, [str(tmp_path / "demos")], progress=False)
    assert result["frames_open"] > 0 and result["frames_close"] > 0  # held-out frames with closed fingers
    assert MiniVLA.from_pretrained(model_dir).config.release_threshold == result["threshold"]


def test_head_cache_refits_only_the_head_and_reuses_the_cache_until_something_changes(tmp_path, monkeypatch):
    import arrcoc_steer.head_cache as head_cache

    write_fake_episodes(tmp_path / "demos", n=4)
    cfg = dict(steps=3, train_only="head", head_cache=16, lr=1e-2)
    trainer = Trainer(small_config(tmp_path, **cfg))
    before = {k: v.clone() for k, v in trainer.model.trainable_state_dict().items()}
    assert len(trainer.cache) == 16 and trainer.cache.action_hidden.shape == (16, 7, 384)
    trainer.run()
    after = trainer.model.trainable_state_dict()
    head = [k for k in before if k.startswith(("head.", "head_bias", "pointer_proj."))]
    assert head and all(not torch.equal(before[k], after[k]) for k in head)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in head)
    record = json.loads(open(tmp_path / "run" / "train_log.jsonl").readline())
    assert "val_loss" in record and record["head_cache_s"] > 0  # the cache's cost is logged with the run

    built = []
    real_build = head_cache.build
    monkeypatch.setattr(head_cache, "build", lambda *a, **k: built.append(1) or real_build(*a, **k))
    again = Trainer(small_config(tmp_path, out=str(tmp_path / "run"), resume=False, **cfg))
    assert built == []  # same weights, data and settings: read from the run folder
    torch.testing.assert_close(again.cache.action_hidden, trainer.cache.action_hidden)
    refit = Trainer(small_config(tmp_path, out=str(tmp_path / "run"), resume=False, init=str(tmp_path / "run" / "model"),
                                 push_geometry=True, **cfg))  # fmt: skip
    assert built == [] and refit.model.config.push_geometry  # another head (refitted, widened) on the same upstream weights
    Trainer(small_config(tmp_path, out=str(tmp_path / "refit"), init=str(tmp_path / "run" / "model"), **cfg))
    assert built == [] and (tmp_path / "refit" / "head_cache_train.safetensors").is_file()  # copied from the parent's run
    Trainer(small_config(tmp_path, out=str(tmp_path / "run"), resume=False, **{**cfg, "seed": 1}))
    assert built == [1, 1]  # another seed draws other frames: both caches rebuilt, never reused stale
    no_holdout = Trainer(small_config(tmp_path, out=str(tmp_path / "all"), holdout_frac=0.0, **cfg))
    assert no_holdout.val_cache is None and no_holdout.validate() == {}


def test_cached_outputs_give_the_logits_of_the_full_forward_pass():
    from arrcoc_steer.head_cache import build
    from arrcoc_steer.models.minivla import MiniVLA
    from tests.models.conftest import make_observation

    model = MiniVLA().eval()
    rng = np.random.default_rng(0)
    obs = make_observation(rng, batch=3)
    images, state, _ = model._check_observation(obs)
    ids, mask = model.tokenize(["put the red block in the tray"] * 3)
    alloc = np.stack([model.region_grid.uniform(100)] * 3)
    batch = {"action": rng.uniform(-1, 1, (3, 7)), "state": obs["state"]}
    with torch.no_grad():
        out = model(images, state, ids, mask, alloc)
        cache = build(np.arange(3), lambda rows: (out, batch), 64, "test")
        logits = model.action_head(cache.action_hidden.float(), cache.pointer)
    torch.testing.assert_close(logits, out.action_logits, atol=0.15, rtol=0.02)  # hidden stored in bf16
    torch.testing.assert_close(cache.true_pointer, out.pointer)  # no labels: the predicted pointer


def test_grounding_cache_fits_only_the_correction_and_is_rebuilt_when_the_weights_change(tmp_path, monkeypatch):
    import arrcoc_steer.head_cache as head_cache

    write_fake_episodes(tmp_path / "demos", n=4)
    cfg = dict(steps=3, train_only="grounding", head_cache=12, lr=1e-2)
    trainer = Trainer(small_config(tmp_path, **cfg))
    chunks = trainer.cache.chunks
    assert len(trainer.cache) == 12 and [len(c["text"]) for c in chunks] == [4, 4, 4]  # batch_size frames each
    assert all(c["visual_out"].shape[1] == c["labels"].shape[1] == c["geom"].shape[1] for c in chunks)
    before = {k: v.clone() for k, v in trainer.model.trainable_state_dict().items()}
    trainer.run()
    after = trainer.model.trainable_state_dict()
    film = [k for k in before if k.startswith("grounding_film.")]
    assert all(not torch.equal(before[k], after[k]) for k in film)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in film)
    record = json.loads(open(tmp_path / "run" / "train_log.jsonl").readline())
    assert record["val_pointer_l1"] >= 0 and record["head_cache_s"] > 0
    assert (tmp_path / "run" / "grounding_cache_train.safetensors").is_file()

    built = []
    real_build = head_cache.build_grounding
    monkeypatch.setattr(head_cache, "build_grounding", lambda *a, **k: built.append(1) or real_build(*a, **k))
    again = Trainer(small_config(tmp_path, out=str(tmp_path / "again"), resume=False, init=str(tmp_path / "run" / "model"), **cfg))
    assert built == [1, 1]  # other weights (the trained correction): rebuilt, never reused stale
    again = Trainer(small_config(tmp_path, out=str(tmp_path / "again"), resume=False, init=str(tmp_path / "run" / "model"), **cfg))
    assert built == [1, 1]  # the same: read back


def test_a_cached_chunk_gives_the_grounding_of_the_full_forward_pass():
    from arrcoc_steer.head_cache import build_grounding
    from arrcoc_steer.models.minivla import GroundingInputs, MiniVLA
    from tests.models.conftest import make_observation

    model = MiniVLA().eval()
    model.add_grounding_film()
    with torch.no_grad():
        model.grounding_film.mlp[-1].weight.normal_(std=0.1)
    rng = np.random.default_rng(0)
    obs = make_observation(rng, batch=3)
    images, state, _ = model._check_observation(obs)
    ids, mask = model.tokenize(["put the red block in the tray", "lift the blue block", ""])
    alloc = np.stack([model.region_grid.uniform(160)] * 3)
    batch = {"grounding": rng.integers(0, 16, (3, 512, 5)).astype(np.uint8)}
    with torch.no_grad():
        out = model(images, state, ids, mask, alloc)
        chunk = build_grounding(np.arange(3), lambda rows: (out, batch), 3, "test").chunks[0]
        logits = model.ground(GroundingInputs(*(chunk[k].float() for k in ("visual_out", "visual_in", "text", "geom"))))
    torch.testing.assert_close(logits, out.grounding_logits, atol=0.1, rtol=0.05)  # stored in bf16
    assert chunk["labels"].shape == (3, out.pooling.shape[1], 5)
    torch.testing.assert_close(chunk["labels"].sum(-1), torch.ones(3, out.pooling.shape[1]))


def test_early_frac_draws_that_share_from_the_first_frames_of_episodes(tmp_path):
    write_fake_episodes(tmp_path / "demos", n=4, length=20)
    trainer = Trainer(small_config(tmp_path, early_frac=0.75))
    rows = trainer.draw_rows(400, np.random.default_rng(0))
    early = trainer.data.index[rows, 1] <= 5
    assert len(rows) == 400 and 0.78 < early.mean() < 0.85  # 75% drawn early + 6/20 of the other 25%
    assert set(rows) <= set(trainer.train_rows)  # never a held-out episode
    with pytest.raises(ConfigError, match="early_frac"):
        TrainConfig(early_frac=1.5)


def loss_only_trainer(**cfg) -> Trainer:
    """A Trainer with just what ``action_loss`` reads: a 256-bin tokenizer and the config."""
    from types import SimpleNamespace

    from arrcoc_steer.models.action_tokens import ActionTokenizer

    trainer = Trainer.__new__(Trainer)
    trainer.model = SimpleNamespace(action_tokenizer=ActionTokenizer(1, 256), config=SimpleNamespace(n_bins=256))
    trainer.cfg = TrainConfig(**cfg)
    return trainer


def test_carry_frames_are_closed_hands_moving_sideways_and_carry_weight_counts_them():
    from arrcoc_steer.train import carry_frames

    state = torch.zeros(4, 9)
    state[:, 7:9] = torch.tensor([[0.01], [0.01], [0.04], [0.01]])  # closed, closed, open, closed
    action = torch.zeros(4, 7)
    action[:, 0] = torch.tensor([0.8, 0.1, 0.8, 0.8])
    action[:, 6] = torch.tensor([1.0, 1.0, 1.0, -1.0])  # the last one is opening: a release
    assert carry_frames(state, action).tolist() == [True, False, False, False]

    logits = torch.randn(4, 7, 256)
    plain, heavy = loss_only_trainer(), loss_only_trainer(carry_weight=1e6)
    only_first, _ = plain.action_loss(logits[:1], action[:1], state[:1])
    everything, _ = plain.action_loss(logits, action, state)
    weighted, _ = heavy.action_loss(logits, action, state)
    assert weighted.item() == pytest.approx(only_first.item(), rel=1e-4)  # the carry frame dominates
    assert weighted.item() != pytest.approx(everything.item(), rel=1e-3)


def test_lower_frames_are_closed_hands_descending_in_place_and_lower_weight_counts_them():
    from arrcoc_steer.train import lower_frames

    state = torch.zeros(5, 9)
    state[:, 7:9] = torch.tensor([[0.01], [0.027], [0.04], [0.01], [0.01]])  # closed, askew grasp, open, closed, closed
    action = torch.zeros(5, 7)
    action[:, 2] = torch.tensor([-0.7, -0.7, -0.7, -0.7, 0.0])
    action[3, 0] = 0.8  # descending while carrying sideways: a carry frame, not a placement
    action[:, 6] = 1.0
    assert lower_frames(state, action).tolist() == [True, True, False, False, False]

    logits = torch.randn(5, 7, 256)
    plain, heavy = loss_only_trainer(), loss_only_trainer(lower_weight=1e6)
    lowering, _ = plain.action_loss(logits[:2], action[:2], state[:2])
    weighted, _ = heavy.action_loss(logits, action, state)
    assert weighted.item() == pytest.approx(lowering.item(), rel=1e-4)
    with pytest.raises(ConfigError, match="lower_weight"):
        TrainConfig(lower_weight=-1)
