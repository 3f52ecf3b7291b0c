"""Demonstration datasets: scripted-expert episodes written as safetensors files, and a lazy reader.

Layout on disk::

    out_dir/
      index.json                          summary: one entry per episode file + failures
      <Task>/episode_00000.safetensors    arrays + metadata of one episode

Each episode file holds ``agentview`` (T, H, W, 3) uint8, ``wrist`` (T, H, W, 3) uint8, ``state``
(T, 9) float32 and ``action`` (T, 7) float32 -- the observation before each action and the action --
plus ``grounding`` (T, 2 * cells, 5) uint8, the task-relative class counts per 8 x 8-pixel cell of
both cameras (:mod:`envs.grounding`; privileged labels for training and analysis),
and, in the safetensors header metadata under the key ``"episode"``, a JSON string with ``task``,
``suite``, ``instruction``, ``modifiers``, ``seed``, ``attempt``, ``failed_seeds``, ``success``,
``length``, ``image_size``, ``noise`` (DART, see :func:`collect`), ``format``. No pickle anywhere.

Collection is deterministic (episode seed = f(seed, task, index, attempt); modifiers and paraphrase
are drawn from it), resumable (files are written to a temporary name and renamed; finished episodes
are skipped) and keeps only successful episodes by default: a failed attempt is retried with the next
derived seed and the failed seeds are recorded.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     index = collect(["LiftRedBlock"], 1, d, image_size=32, progress=False)
...     ds = DemoDataset(d)
...     ep = ds[0]
...     (len(ds), ep.meta["task"], ep["action"].shape[1], ep["agentview"].shape[1:])
(1, 'LiftRedBlock', 7, (32, 32, 3))
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from arrcoc_steer.errors import ConfigError

FORMAT = "arrcoc-demo-v1"
ARRAYS = ("agentview", "wrist", "state", "action")


def episode_seed(seed: int, task: str, index: int, attempt: int = 0) -> int:
    """The env seed of episode ``index`` of ``task`` (attempt ``attempt``), stable across runs."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(task.encode()), int(index), int(attempt)])
    return int(ss.generate_state(1, np.uint32)[0])


NOISE_CORRELATION = 0.7  # AR(1) coefficient of the executed-action noise: drifts that last a few steps
QUIET_PHASES = ("grasp", "release")  # the fingers are closing or opening: noise there only loses the block
TAKEOVER_WINDOW = 0.75  # with a driving policy, the expert takes over at a step drawn from the first 75% of the limit


def _record_episode(env, ep_seed: int, modifiers, image_size: int, noise: float = 0.0,
                    max_steps: int | None = None, from_subgoal: int = 0, driver=None) -> tuple[dict, dict]:  # fmt: skip
    """Run the expert once (its first ``max_steps`` steps only, if given); return (arrays, metadata).

    With a ``driver`` (a policy: ``predict_action(observation, instruction)``, ``reset()``) the
    driver acts, unrecorded, until a step drawn from the episode's seed; there the expert takes over
    (:meth:`ScriptedExpert.replan`) and the file starts: the expert's corrections from the states the
    policy led to (DAgger, Ross et al. 2011). An episode the driver ends before then is retried.

    With ``from_subgoal`` = k the expert runs unrecorded until k subgoals are done, and the file
    starts there: the frames of a later step of a multi-step task, where the target has changed.
    The noise, too, starts there (the earlier steps only have to get the scene there).

    With ``noise`` > 0 the env executes the expert's translation plus temporally correlated Gaussian
    noise (stationary std ``noise`` action units) while the file records the expert's clean action
    (DART, Laskey et al. 2017): the demos then visit the off-course states a cloned policy drifts
    into, each labelled with the correction back.
    """
    from .expert import ScriptedExpert
    from .grounding import scene_grounding

    obs, info = env.reset(seed=ep_seed, options={"modifiers": modifiers})
    expert = ScriptedExpert(env)
    rng = np.random.default_rng([ep_seed, 1])
    drift = np.zeros(3)
    frames: dict[str, list] = {k: [] for k in (*ARRAYS, "grounding")}
    terminated = truncated = False
    recording = from_subgoal == 0 and driver is None
    takeover = None
    if driver is not None:
        driver.reset()
        takeover = int(np.random.default_rng([ep_seed, 2]).integers(1, int(TAKEOVER_WINDOW * env.unwrapped.max_episode_steps)))
        for _ in range(takeover):
            obs, reward, terminated, truncated, info = env.step(driver.predict_action(obs, obs["instruction"]))
            if terminated or truncated:
                return {}, {"success": False}
        expert.replan()
        recording = from_subgoal == 0
    while not (terminated or truncated) and (max_steps is None or len(frames["action"]) < max_steps):
        action = expert.act(obs)
        recording = recording or sum(env.unwrapped.subgoals_done()) >= from_subgoal
        if recording:
            for k in ("agentview", "wrist", "state"):
                frames[k].append(obs[k])
            frames["action"].append(action)
            frames["grounding"].append(scene_grounding(env.unwrapped))
        executed = action
        if noise > 0 and recording and expert.phase not in QUIET_PHASES:
            innovation = rng.normal(0.0, noise * np.sqrt(1 - NOISE_CORRELATION**2), 3)
            drift = NOISE_CORRELATION * drift + innovation
            executed = action.copy()
            executed[:3] = np.clip(action[:3] + drift, -1.0, 1.0)
        obs, reward, terminated, truncated, info = env.step(executed)
    u = env.unwrapped
    if not frames["action"]:  # the episode ended before its first recorded step: a failure, retried
        return {}, {"success": False}
    arrays = {k: np.ascontiguousarray(np.stack(v)) for k, v in frames.items()}
    meta = {
        "format": FORMAT,
        "task": u.task.name,
        "suite": u.task.suite,
        "instruction": u.instruction,
        "modifiers": u.modifiers.to_dict(),
        "seed": ep_seed,
        "success": bool(info["success"]) if terminated or truncated else None,  # None: cut before the end
        "length": int(arrays["action"].shape[0]),
        "image_size": image_size,
        "noise": noise,
        **({"max_steps": max_steps} if max_steps else {}),
        **({"from_subgoal": from_subgoal} if from_subgoal else {}),
        **({"takeover_step": takeover} if takeover is not None else {}),
    }
    return arrays, meta


def _write_atomic(path: Path, arrays: dict, meta: dict) -> None:
    from safetensors.numpy import save_file

    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    save_file(arrays, str(tmp), metadata={"episode": json.dumps(meta, sort_keys=True)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of one episode file (reads only the header)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()["episode"])


def collect(
    tasks: list[str],
    episodes_per_task: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    modifiers: str = "random",
    image_size: int = 128,
    keep_failures: bool = False,
    max_attempts: int = 5,
    progress: bool = True,
    noise: float = 0.0,
    workers: int = 1,
    max_steps: int | None = None,
    from_subgoal: int = 0,
    takeover: str | None = None,
) -> dict:
    """Write ``episodes_per_task`` expert demos of each task to ``out_dir``; return the index.

    Args:
        tasks: task names (see :func:`envs.list_tasks`).
        episodes_per_task: episodes to keep per task.
        out_dir: output folder (created; finished episodes in it are kept and skipped).
        seed: base seed; every episode seed derives from (seed, task, index, attempt).
        modifiers: "random" (speed / height / care sampled per episode from its seed) or "none".
        image_size: camera image side in pixels.
        keep_failures: also keep episodes the expert failed (default: retry with the next seed).
        max_attempts: attempts per episode before giving up (recorded under ``failed`` in the index).
        progress: show a tqdm progress bar.
        noise: std of the correlated noise added to the executed (not the recorded) translation, in
            action units (0.3 = 9 mm per step); 0 records the expert's own states.
        workers: processes, each collecting whole tasks (one task's folder is only ever written by
            one process); the same files as ``workers=1``, since every episode's seed is its own.
        max_steps: record only the expert's first ``max_steps`` steps of each episode (``success``
            None: not run to the end). Cheap perception data: the first frames are where a policy
            decides which block the instruction names, and grounding labels need no outcome.
        from_subgoal: start recording once this many subgoals are done (the expert runs the earlier
            steps unrecorded; episodes that never get there are retried). With ``max_steps``: the
            first frames of a later step, where a two-step task's target changes.
        takeover: a MiniVLA checkpoint folder (or "default", the shipped policy) that drives each
            episode until a random step in the first 75% of its limit; the expert takes over from
            there and only its part is recorded (DAgger-style data: the corrections from the states
            that policy reaches). The policy runs on one thread per worker, as the eval harness runs it.
    """
    import envs
    from tqdm.auto import tqdm

    if modifiers not in ("random", "none"):
        raise ConfigError(f"modifiers must be 'random' or 'none', got {modifiers!r}")
    if not 0 <= noise <= 1:
        raise ConfigError(f"noise must be in [0, 1] action units, got {noise}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 (or None for whole episodes), got {max_steps}")
    if from_subgoal < 0:
        raise ConfigError(f"from_subgoal must be >= 0 (0: record from the first step), got {from_subgoal}")
    if episodes_per_task < 0 or max_attempts < 1 or workers < 1:
        raise ConfigError(
            f"need episodes_per_task >= 0, max_attempts >= 1 and workers >= 1, got {episodes_per_task}, {max_attempts}, {workers}"
        )
    if takeover is not None and takeover != "default" and not (Path(takeover) / "config.json").is_file():
        raise ConfigError(f"takeover must be a MiniVLA checkpoint folder (with config.json) or 'default', got {takeover!r}")
    specs = [envs.get_task(t) for t in tasks]  # validates names before any work
    short = [s.name for s in specs if len(s.subgoals) <= from_subgoal]
    if short:
        raise ConfigError(f"from_subgoal={from_subgoal} needs tasks with more subgoals than that; {short} have "
                          f"{from_subgoal} or fewer (the multi-step tasks are the 'long' suite's)")  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = functools.partial(_collect_task, episodes_per_task=episodes_per_task, out=out, seed=seed, modifiers=modifiers,
                            image_size=image_size, keep_failures=keep_failures, max_attempts=max_attempts, noise=noise,
                            max_steps=max_steps, from_subgoal=from_subgoal, takeover=takeover)  # fmt: skip
    failed = []
    bar = tqdm(total=len(specs) * episodes_per_task, disable=not progress, desc="demos")
    if workers == 1:
        for spec in specs:
            failed += job(spec.name, on_episode=bar.update)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        with ProcessPoolExecutor(min(workers, len(specs)), mp_context=get_context("spawn")) as pool:
            for done in as_completed([pool.submit(job, spec.name) for spec in specs]):
                failed += done.result()
                bar.update(episodes_per_task)
    bar.close()
    old = [f for f in _read_index(out).get("failed", []) if f["task"] not in tasks]  # other tasks' failures stay
    config = {"seed": seed, "modifiers": modifiers, "image_size": image_size, "noise": noise}
    config.update({"max_steps": max_steps} if max_steps else {})
    config.update({"from_subgoal": from_subgoal} if from_subgoal else {})
    config.update({"takeover": takeover} if takeover else {})
    return write_index(out, old + failed, config)


def _collect_task(task, episodes_per_task, out, seed, modifiers, image_size, keep_failures, max_attempts, noise,
                  max_steps=None, from_subgoal=0, takeover=None, on_episode=None) -> list:  # fmt: skip
    """Collect the missing episodes of one task into ``out/task``; return its failures."""
    import envs

    from .modifiers import Modifiers

    folder = out / task
    folder.mkdir(exist_ok=True)
    for stale in folder.glob(".tmp-*"):
        stale.unlink()  # left by an interrupted run (each task's folder has one writer)
    failed = []
    with _driver(takeover) as driver:
        env = envs.make(task, image_size=image_size)
        try:
            for i in range(episodes_per_task):
                path = folder / f"episode_{i:05d}.safetensors"
                if not path.exists():
                    failed += _collect_one(env, task, i, path, seed, modifiers, image_size, keep_failures, max_attempts,
                                           Modifiers, noise, max_steps, from_subgoal, driver)  # fmt: skip
                if on_episode is not None:
                    on_episode()
        finally:
            env.close()
    return failed


@contextlib.contextmanager
def _driver(takeover: str | None):
    """The policy of ``collect(takeover=...)``, on one thread (restored after), or None."""
    if takeover is None:
        yield None
        return
    from arrcoc_steer.eval.backends import torch_threads
    from arrcoc_steer.models.minivla import load_policy

    with torch_threads(1):
        yield load_policy(None if takeover == "default" else takeover)


def _read_index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text()) if (out / "index.json").exists() else {}


def _collect_one(env, task, i, path, seed, modifiers, image_size, keep_failures, max_attempts, Modifiers, noise,
                 max_steps=None, from_subgoal=0, driver=None) -> list:  # fmt: skip
    failed_seeds = []
    for attempt in range(max_attempts):
        s = episode_seed(seed, task, i, attempt)
        mods = Modifiers.sample(np.random.default_rng(s)) if modifiers == "random" else Modifiers()
        arrays, meta = _record_episode(env, s, mods, image_size, noise, max_steps, from_subgoal, driver)
        if meta["success"] is not False or (keep_failures and arrays):  # None: a prefix (max_steps), kept
            meta.update(index=i, attempt=attempt, failed_seeds=failed_seeds)
            _write_atomic(path, arrays, meta)
            return []
        failed_seeds.append(s)
    return [{"task": task, "index": i, "failed_seeds": failed_seeds}]


def write_index(out_dir: str | os.PathLike, failed: list | None = None, config: dict | None = None) -> dict:
    """Rebuild ``index.json`` from the episode files in ``out_dir`` (atomically) and return it."""
    out = Path(out_dir)
    old = _read_index(out)
    episodes = []
    for p in sorted(out.glob("*/episode_*.safetensors")):
        m = read_meta(p)
        m["file"] = str(p.relative_to(out))
        episodes.append(m)
    index = {
        "format": FORMAT,
        "config": config if config is not None else old.get("config", {}),
        "episodes": episodes,
        "failed": failed if failed is not None else old.get("failed", []),
        "total_steps": int(sum(e["length"] for e in episodes)),
    }
    tmp = out / f".tmp-{os.getpid()}-index.json"
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(tmp, out / "index.json")
    return index


class Episode:
    """One episode file; arrays load lazily (``ep["agentview"]``), metadata in ``ep.meta``."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta

    def keys(self) -> tuple[str, ...]:
        return ARRAYS

    def __getitem__(self, key: str) -> np.ndarray:
        from safetensors import safe_open

        if key not in ARRAYS:
            raise KeyError(f"{key!r} is not an episode array; arrays: {ARRAYS}")
        with safe_open(str(self.path), framework="numpy") as f:
            return f.get_tensor(key)

    def __len__(self) -> int:
        return int(self.meta["length"])

    def __repr__(self) -> str:
        return f"Episode({self.meta['task']!r}, length={len(self)}, instruction={self.meta['instruction']!r})"


class DemoDataset:
    """Read a folder written by :func:`collect`: ``len(ds)``, ``ds[i]`` -> :class:`Episode`, ``frames()``.

    Args:
        path: the dataset folder.
        tasks: keep only these tasks (default: all).
        successful_only: skip episodes with ``success == False`` (present only with keep_failures);
            prefixes (``max_steps``, success None) are kept.
    """

    def __init__(self, path: str | os.PathLike, tasks: list[str] | None = None, successful_only: bool = True):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(f"dataset folder {str(self.path)!r} does not exist")
        if (self.path / "index.json").exists():
            entries = json.loads((self.path / "index.json").read_text())["episodes"]
        else:
            entries = [dict(read_meta(p), file=str(p.relative_to(self.path)))
                       for p in sorted(self.path.glob("*/episode_*.safetensors"))]  # fmt: skip
        keep = lambda e: (tasks is None or e["task"] in tasks) and (e["success"] is not False or not successful_only)  # noqa: E731
        self.episodes = [Episode(self.path / e["file"], e) for e in entries if keep(e)]

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    @property
    def tasks(self) -> list[str]:
        return sorted({e.meta["task"] for e in self.episodes})

    def frames(self) -> Iterator[dict]:
        """Every step of every episode, in order: a dict with the four arrays at that step plus
        ``instruction``, ``task``, ``episode`` (index in this dataset) and ``t``. Loads one episode at
        a time."""
        for k, ep in enumerate(self.episodes):
            arrays = {key: ep[key] for key in ARRAYS}
            for t in range(len(ep)):
                yield {**{key: a[t] for key, a in arrays.items()}, "instruction": ep.meta["instruction"],
                       "task": ep.meta["task"], "episode": k, "t": t}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse

    import envs

    p = argparse.ArgumentParser(prog="python -m envs.dataset", description="Collect scripted-expert demos.")
    p.add_argument("out_dir")
    p.add_argument("--tasks", nargs="*", default=None, help="task names (default: every task of --suites)")
    p.add_argument("--suites", nargs="*", default=None, help="suites (default: all)")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modifiers", choices=("random", "none"), default="random")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--noise", type=float, default=0.0, help="DART noise on the executed translation (action units)")
    args = p.parse_args(argv)
    tasks = args.tasks or [t for s in (args.suites or list(envs.SUITES)) for t in envs.list_tasks(s)]
    index = collect(tasks, args.episodes, args.out_dir, args.seed, args.modifiers, args.image_size, noise=args.noise)
    print(f"{len(index['episodes'])} episodes, {index['total_steps']} steps, {len(index['failed'])} failed -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
