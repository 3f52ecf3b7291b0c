"""LIBERO-style tabletop manipulation in MuJoCo: tasks, the gymnasium env, scripted experts, demos.

Importing ``envs`` registers every task with gymnasium as ``arrcoc/<TaskName>-v0``.

>>> import envs
>>> sorted(envs.SUITES)
['goal', 'long', 'object', 'spatial']
>>> envs.list_tasks("goal")
['PushRedBlockToZone', 'LiftRedBlock', 'PutRedBlockInTray', 'PutRedBlockOnPlate']
>>> env = envs.make("LiftRedBlock", render_cameras=False)
>>> obs, info = env.reset(seed=0)
>>> sorted(obs), obs["state"].shape, info["target_object"]
(['agentview', 'instruction', 'state', 'wrist'], (9,), 'red_block')
>>> env.close()

Modules: :mod:`envs.scene` (MJCF), :mod:`envs.tasks` (TaskSpec, suites, success predicates),
:mod:`envs.tabletop` (the env), :mod:`envs.modifiers`, :mod:`envs.expert`, :mod:`envs.dataset`,
:mod:`envs.demo`, :mod:`envs.libero` (real-LIBERO adapter, optional).
"""

from __future__ import annotations

import gymnasium

from arrcoc_steer.errors import UnknownNameError

from .modifiers import Modifiers
from .tasks import SUITES, TASKS, TaskSpec

__all__ = ["make", "list_tasks", "get_task", "SUITES", "TASKS", "TaskSpec", "Modifiers", "ENTRY_POINT"]

ENTRY_POINT = "envs.tabletop:TabletopEnv"


def get_task(name: str) -> TaskSpec:
    """The TaskSpec called ``name`` (a bare name or a gymnasium id ``arrcoc/<name>-v0``)."""
    key = str(name)
    if key.startswith("arrcoc/") and key.endswith("-v0"):
        key = key[len("arrcoc/") : -len("-v0")]
    if key not in TASKS:
        raise UnknownNameError("task", name, TASKS)
    return TASKS[key]


def list_tasks(suite: str | None = None) -> list[str]:
    """Task names of ``suite`` (all tasks, suite by suite, when None)."""
    if suite is None:
        return [t for s in SUITES.values() for t in s]
    if suite not in SUITES:
        raise UnknownNameError("suite", suite, SUITES)
    return list(SUITES[suite])


def make(task: str, **kwargs) -> gymnasium.Env:
    """``gymnasium.make`` for a task name (or its id); kwargs go to :class:`envs.tabletop.TabletopEnv`."""
    return gymnasium.make(get_task(task).env_id, **kwargs)


def _register() -> None:
    for spec in TASKS.values():
        if spec.env_id not in gymnasium.registry:
            # the env truncates itself (kwarg max_episode_steps), so no TimeLimit wrapper is added
            gymnasium.register(id=spec.env_id, entry_point=ENTRY_POINT, kwargs={"task": spec.name})


_register()
