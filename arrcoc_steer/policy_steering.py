"""Steering material for a policy in the simulated suite: what a steering experiment needs on disk.

Interventions are generic (:mod:`arrcoc_steer.steering`); what is specific to a *policy* is the data
they are measured on. This module makes it from scripted-expert rollouts in ``envs``:

* :func:`observations` -- (observation, instruction) pairs along expert episodes;
* :func:`write_calibration` -- each neuron's activation scale on them (alpha in calibrated units);
* :func:`write_concepts` -- concept neurons found from keywords in the policy's atlas (YAML);
* :func:`write_action_concepts` -- concept neurons found by how they move the policy's actions
  through its head (an :class:`~arrcoc_steer.readout.ActionReadout` on the same observations), as a
  word's rule asks or as a prompt modifier does;
* :func:`write_direction` -- a contrastive residual direction, e.g. "... quickly" minus "... slowly",
  on the same observations, so that only the instruction differs;
* :func:`write_map` -- a residual map from the instruction's activations to those with a modifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from .errors import ConfigError

DEFAULT_TASKS = ("LiftRedBlock", "PickRedBlockIntoTray", "PushRedBlockToZone", "PickLeftBlockIntoTray")
CONCEPT_SPECS = {
    "fast": (["fast", "quick"], ["slow"]),
    "slow": (["slow", "slowly"], ["fast"]),
    "up": (["up", "upward"], ["down"]),
}


def observations(tasks: Sequence[str] = DEFAULT_TASKS, per_task: int = 8, seed: int = 0, every: int = 3) -> list[dict]:
    """``per_task`` observations per task, every ``every`` steps of a scripted-expert episode."""
    import envs
    from envs.expert import ScriptedExpert

    items = []
    for i, task in enumerate(tasks):
        env = envs.make(task)
        try:
            obs, _ = env.reset(seed=seed + i)
            expert = ScriptedExpert(env)
            for t in range(per_task * every):
                if t % every == 0:
                    items.append({"obs": obs, "instruction": obs["instruction"]})
                obs, _, terminated, truncated, _ = env.step(expert.act(obs))
                if terminated or truncated:
                    obs, _ = env.reset(seed=seed + i + 1000 * (t + 1))
                    expert = ScriptedExpert(env)
        finally:
            env.close()
    return items


def with_modifier(instruction: str, modifier: str) -> str:
    """``instruction`` with ``modifier`` appended, as the ``prompt`` condition appends it ("" adds nothing)."""
    return f"{instruction.rstrip(' .')} {modifier}".strip()


def runner(budget: int = 64):
    """``run(policy, item)`` for :func:`~arrcoc_steer.steering.calibrate` and contrasts."""

    def run(policy, item: dict):
        return policy.predict_action(item["obs"], item["instruction"], budget=budget)

    return run


def write_calibration(policy, path: str | Path, items: list[dict] | None = None, budget: int = 64) -> Path:
    from .steering import calibrate

    path = Path(path)
    calibrate(policy, items or observations(), run=runner(budget)).save(path)
    return path


def write_concepts(policy, path: str | Path, specs: dict | None = None, *, atlas=None, cache: str | Path | None = None,
                   top_n: int = 10, layers: Sequence[int] | None = None) -> list:  # fmt: skip
    """Find each concept ``{name: (keywords, against)}`` and save them as one YAML dictionary."""
    from .atlas import NeuronAtlas
    from .concepts import find_concept, save_concepts

    atlas = atlas or NeuronAtlas.build(policy, cache=cache, progress=False)
    found = [find_concept(atlas, words, policy, name=name, against=against, top_n=top_n, layers=layers)
             for name, (words, against) in (specs or CONCEPT_SPECS).items()]  # fmt: skip
    save_concepts(path, found)
    return found


def write_action_concepts(policy, path: str | Path, meanings: Sequence[str] = ("fast", "slow", "up"), *,
                          items: list[dict] | None = None, readout: str | Path | None = None, top_n: int = 20,
                          layers: Sequence[int] | None = None, budget: int = 64,
                          modifiers: Mapping[str, str] | None = None) -> list:  # fmt: skip
    """Find each action concept (a key of :data:`~arrcoc_steer.concepts.ACTION_MEANINGS`) through the
    policy's action readout (at ``layers``, default the last) and save them as one YAML dictionary.
    ``modifiers`` (name -> prompt modifier, e.g. ``{"up_prompt": "and lift it high"}``) adds concepts
    found from what each modifier does to the same states' actions (a
    :class:`~arrcoc_steer.concepts.PromptMeaning`). ``readout``: a file to reuse (fitted on ``items``
    and written there when missing; fitting costs ~0.05 s per observation at the last layer on 2 CPU
    cores, the observations themselves ~1 s); a reused file is checked to be from these ``items``
    when ``modifiers`` need them."""
    from .concepts import action_meaning, find_action_concept, save_concepts
    from .readout import ActionReadout, expected_actions

    for meaning in meanings:  # before the observations' and the readout's work
        action_meaning(meaning)
    items = items or observations()
    logits = action_logits(budget)
    reused = readout is not None and Path(readout).exists()
    if reused:
        fitted = ActionReadout.load(readout)
    else:
        fitted = ActionReadout.fit(policy, items, logits, layers=layers, progress=True)
        if readout is not None:
            fitted.save(readout)
    found = [find_action_concept(fitted, meaning, policy, top_n=top_n, layers=layers) for meaning in meanings]
    if modifiers:
        plain = fitted.actions  # fitted on these items just now; a reused file must be of them too
        if reused:
            plain = expected_actions(policy, items, logits, values=fitted.values)
            fitted.check_states(plain)
        for name, modifier in modifiers.items():
            shown = prompt_meaning(policy, items, modifier, budget=budget, plain=plain, values=fitted.values)
            found.append(find_action_concept(fitted, shown, policy, name=name, top_n=top_n, layers=layers))
    save_concepts(path, found)
    return found


def prompt_meaning(policy, items: list[dict], modifier: str, *, budget: int = 64, plain=None, values=None):
    """What ``modifier`` means to ``policy`` on ``items``: the change appending it to each instruction
    makes to the expected action (a :class:`~arrcoc_steer.concepts.PromptMeaning`). ``plain``: the
    items' expected actions without it, when already computed; ``values``: the bins' action values
    (default: the policy's own)."""
    from .concepts import PromptMeaning
    from .readout import expected_actions

    logits = action_logits(budget)
    if plain is None:
        plain = expected_actions(policy, items, logits, values=values)
    shown = [{**it, "instruction": with_modifier(it["instruction"], modifier)} for it in items]
    return PromptMeaning(modifier, expected_actions(policy, shown, logits, values=values) - plain)


def action_logits(budget: int = 64):
    """``logits(policy, item)`` -> MiniVLA's action logits for an item of :func:`observations`, with
    gradients: what :class:`~arrcoc_steer.readout.ActionReadout` reads."""

    def logits(policy, item: dict):
        return policy.action_logits(item["obs"], item["instruction"], budget=budget)

    return logits


def write_direction(policy, path: str | Path, positive: str = "quickly", negative: str = "slowly", *,
                    layers: Sequence[int] | None = None, items: list[dict] | None = None, budget: int = 64,
                    positions: str = "all", normalize: bool = True, top_layers: int | None = None,
                    name: str | None = None) -> Path:  # fmt: skip
    """Mean residual on "<instruction> <positive>" minus "<instruction> <negative>", same observations
    (a modifier may be empty: "and lift it high" against "" is the contrast of one modifier).

    ``normalize`` makes each layer's vector unit length (strength in residual-norm units; otherwise
    strength 1 adds the mean difference itself); ``top_layers=k`` keeps the k layers where the
    difference is largest (:meth:`~arrcoc_steer.steering.ResidualDirection.top_layers`).
    """
    from .steering import ResidualDirection

    if positive == negative:
        raise ConfigError(f"positive and negative modifiers must differ, got {positive!r} twice")
    items = items or observations()
    n_layers = len(policy.backbone.encoder.layer)
    layers = list(range(n_layers)) if layers is None else list(layers)
    pos = [{**it, "instruction": with_modifier(it["instruction"], positive)} for it in items]
    neg = [{**it, "instruction": with_modifier(it["instruction"], negative)} for it in items]
    direction = ResidualDirection.from_contrast(policy, pos, neg, layers, positions=positions, run=runner(budget),
                                                normalize=False, name=name or f"{positive}-{negative}")  # fmt: skip
    if top_layers is not None:
        direction = direction.top_layers(top_layers)
    if normalize:
        direction = replace(direction, vectors={l: v / v.norm().clamp_min(1e-12) for l, v in direction.vectors.items()})
    path = Path(path)
    direction.save(path)
    return path


def write_map(policy, path: str | Path, modifier: str, base: str = "", *, layers: Sequence[int],
              items: list[dict] | None = None, budget: int = 64, positions: str = "action",
              per_position: bool = True, ridge: float = 0.05, name: str | None = None) -> Path:  # fmt: skip
    """A :class:`~arrcoc_steer.steering.ResidualMap` from "<instruction> <base>" to "<instruction>
    <modifier>" on the same observations: strength 1 moves the policy's activations as the modifier
    would. One map per action query by default (each decodes one action dimension)."""
    from .steering import ResidualMap

    if modifier == base:
        raise ConfigError(f"modifier and base must differ, got {modifier!r} twice")
    items = items or observations()
    source = [{**it, "instruction": with_modifier(it["instruction"], base)} for it in items]
    target = [{**it, "instruction": with_modifier(it["instruction"], modifier)} for it in items]
    fitted = ResidualMap.fit(policy, source, target, layers, positions=positions, per_position=per_position,
                             ridge=ridge, run=runner(budget), name=name or modifier.replace(" ", "_"))  # fmt: skip
    path = Path(path)
    fitted.save(path)
    return path
