"""The policy contract the evaluation harness runs, and the policies it ships.

A policy is any object with ``predict_action(observation: dict, instruction: str, **kwargs) ->
np.ndarray (7,)`` and, optionally:

* ``reset()`` -- called at the start of every episode (clear chunk queues, recurrent state);
* ``bind_env(env)`` -- called after every ``env.reset``, before ``reset()``, by privileged policies
  that read the simulator (the scripted expert);
* ``requires_images`` -- ``False`` lets the harness skip rendering (much faster); default ``True``;
* ``set_strength(alpha)`` -- a steering knob of the policy's own, for closed-loop conditions that
  name no neuron or residual steering;
* ``model`` (or the policy itself being a ``torch.nn.Module``) -- what neuron and residual steering
  conditions act on.

A bare function ``f(observation, instruction)`` is a policy too (:func:`as_policy` wraps it).

>>> import numpy as np
>>> policy = as_policy(lambda obs, instruction: np.zeros(7))
>>> policy.predict_action({}, "lift the red block").shape
(7,)
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, UnknownNameError

POLICY_NAMES = ("expert",)  # policies :func:`load_policy` knows by name (besides checkpoint directories)


@runtime_checkable
class Policy(Protocol):
    def predict_action(self, observation: dict, instruction: str, **kwargs) -> np.ndarray: ...


class FunctionPolicy:
    """A plain function ``f(observation, instruction[, **kwargs]) -> action`` as a policy."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def predict_action(self, observation: dict, instruction: str, **kwargs) -> np.ndarray:
        return self.fn(observation, instruction, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionPolicy({getattr(self.fn, '__qualname__', self.fn)!r})"


class ExpertPolicy:
    """The task's scripted expert (:mod:`envs.expert`) as a policy: a perfect, privileged reference.

    It reads the simulator through ``bind_env``, so it needs no images (``requires_images = False``)
    and it obeys the modifiers of the instruction ("... quickly" makes it faster), which makes it the
    known-answer policy for prompt conditions. ``noise`` adds Gaussian noise to its translation
    commands, seeded per episode from the global NumPy RNG that the rollout seeds.

    Attributes:
        noise: std of the translation noise (action units).
        gain: multiplies the translation command (clipped to [-1, 1]); ``set_strength`` sets
            ``gain = 2 ** alpha``, a monotone speed knob for testing closed-loop control.
    """

    requires_images = False

    def __init__(self, noise: float = 0.0, gain: float = 1.0):
        self.noise, self.gain = float(noise), float(gain)
        self._expert = None

    def bind_env(self, env) -> None:
        from envs.expert import ScriptedExpert

        self._expert = ScriptedExpert(env, noise=self.noise)

    def reset(self) -> None:
        if self._expert is None:
            raise ConfigError("ExpertPolicy.reset() before bind_env(env): the expert reads the simulator")
        self._expert.seed = int(np.random.randint(2**31))
        self._expert.reset()

    def set_strength(self, alpha: float) -> None:
        self.gain = float(2.0**alpha)

    def predict_action(self, observation: dict, instruction: str, **kwargs) -> np.ndarray:
        if self._expert is None:
            raise ConfigError("ExpertPolicy needs bind_env(env) first (the harness does this)")
        action = np.asarray(self._expert.act(observation), np.float32)
        if self.gain != 1.0:
            action[:3] = np.clip(action[:3] * self.gain, -1.0, 1.0)
        return action

    def __getstate__(self) -> dict:  # sent to workers unbound
        return {"noise": self.noise, "gain": self.gain, "_expert": None}

    def __repr__(self) -> str:
        return f"ExpertPolicy(noise={self.noise}, gain={self.gain})"


def as_policy(obj: Any) -> Policy:
    """``obj`` if it has ``predict_action``; a plain callable wrapped in :class:`FunctionPolicy`."""
    if callable(getattr(obj, "predict_action", None)):
        return obj
    if callable(obj):
        return FunctionPolicy(obj)
    raise ConfigError(f"a policy needs a predict_action(observation, instruction) method or must be a "
                      f"function of (observation, instruction); got {type(obj).__name__}")


def check_policy_source(source: Any) -> None:
    """Raise (listing the valid choices) unless :func:`load_policy` can load ``source``; loads nothing."""
    if not isinstance(source, (str, Path)):
        as_policy(source)
    elif str(source) not in POLICY_NAMES and not (Path(source) / "config.json").is_file():
        raise UnknownNameError("policy", str(source), [*POLICY_NAMES, "<a MiniVLA checkpoint directory>"])


def load_policy(source: Any) -> Policy:
    """A policy from a name (``"expert"``), a checkpoint directory (MiniVLA), or a policy object."""
    check_policy_source(source)
    if not isinstance(source, (str, Path)):
        return as_policy(source)
    if str(source) in POLICY_NAMES:
        return ExpertPolicy()
    from ..models.minivla import MiniVLA

    return MiniVLA.from_pretrained(source)


def describe_policy(source: Any) -> str:
    """A short, stable description of a policy source for the sweep manifest; a checkpoint directory
    is named with a hash of its files, so a run folder knows when the weights behind a path changed."""
    if isinstance(source, (str, Path)):
        files = [Path(source) / name for name in ("config.json", "model.safetensors")]
        if not all(f.is_file() for f in files):
            return str(source)
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
        return f"{source} (weights {digest})"
    return repr(source) if type(source).__repr__ is not object.__repr__ else type(source).__qualname__


def accepts(policy: Policy, keyword: str) -> bool:
    """Whether ``policy.predict_action`` (a wrapped function's own signature) takes ``keyword``."""
    fn = policy.fn if isinstance(policy, FunctionPolicy) else policy.predict_action
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True  # builtins and C extensions: assume yes, the call will tell
    return any(p.kind is p.VAR_KEYWORD or p.name == keyword for p in params)


def steerable_model(policy: Policy):
    """The torch module that neuron / residual steering acts on: the policy itself or ``policy.model``."""
    import torch

    if isinstance(policy, torch.nn.Module):
        return policy
    model = getattr(policy, "model", None)
    if isinstance(model, torch.nn.Module):
        return model
    raise ConfigError(f"this condition steers a model's neurons or residual stream, but the policy "
                      f"{type(policy).__name__} is not a torch.nn.Module and has no .model attribute")
