"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

A checkpoint directory holds the model's trained tensors (``model.safetensors`` + ``config.json``, the
same format as a released model), the optimizer's tensors (``optimizer.safetensors``), and
``trainer_state.json`` (step, optimizer hyper-parameters, numpy RNG state). The torch RNG state is a
uint8 tensor stored with the optimizer. Writes go to a temporary directory that is renamed into
place, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"state.{idx}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith("state."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


def save_training_state(trainer, directory: Path) -> None:
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tensors, groups = _flatten_optimizer(trainer.optimizer)
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, tmp / "optimizer.safetensors")
    state = {"step": trainer.step, "param_groups": groups, "numpy_rng": trainer.rng.bit_generator.state}
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(trainer, directory: Path) -> None:
    directory = Path(directory)
    try:
        state = json.loads((directory / "trainer_state.json").read_text())
        tensors = load_file(directory / "optimizer.safetensors")
        weights = load_file(directory / "model.safetensors")
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot resume from {directory}: {e}; delete it to start over") from e
    trainer.model.load_trainable_state_dict(weights)
    trainer.model.to(trainer.device)
    torch.set_rng_state(tensors.pop("torch_rng"))
    opt_state = _unflatten_optimizer(tensors, state["param_groups"])
    trainer.optimizer.load_state_dict(opt_state)
    trainer.rng.bit_generator.state = state["numpy_rng"]
    trainer.step = int(state["step"])
