"""The checkpoint the package ships: it loads offline, acts, stays small, and carries its model card."""

import json

import numpy as np
import torch

import envs
from arrcoc_steer.models.minivla import DEFAULT_CHECKPOINT, PUSH_GEOMETRY_DIM, MiniVLA, load_policy


def test_the_shipped_policy_loads_offline_and_acts_on_a_real_observation():
    policy = load_policy()
    env = envs.make("PickRedBlockIntoTray")
    try:
        obs, _ = env.reset(seed=0)
        for budget in (64, 400):
            action = policy.predict_action(obs, obs["instruction"], budget=budget)
            assert action.shape == (7,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1)
            env.step(action)  # the env accepts it as is
    finally:
        env.close()
    assert isinstance(policy, MiniVLA) and not policy.training


def test_the_shipped_checkpoint_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "MODEL_CARD.md"} <= set(files)
    assert files["model.safetensors"] <= 25 * 2**20  # beyond the base MiniLM weights, which it does not repeat
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    card = (DEFAULT_CHECKPOINT / "MODEL_CARD.md").read_text()
    assert "arrcoc-steer train" in card and "## Success" in card
    json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())


def test_the_shipped_policy_reads_the_push_direction():
    """Stage 8 (push_geometry): the head's geometry inputs are wired in and trained, so its actions differ
    from the same head with them zeroed."""
    policy = MiniVLA.from_pretrained(DEFAULT_CHECKPOINT)
    assert policy.config.push_geometry
    first = policy.pointer_proj[0]
    columns = slice(first.in_features - PUSH_GEOMETRY_DIM * policy.grid_cameras, None)
    env = envs.make("PushRedBlockToZone")
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    action = policy.predict_action(obs, obs["instruction"], budget=400)
    assert action.shape == (7,) and np.all(np.isfinite(action))
    with torch.no_grad():
        first.weight[:, columns] = 0
    blind = policy.predict_action(obs, obs["instruction"], budget=400)
    assert np.abs(action - blind).max() > 1e-3
