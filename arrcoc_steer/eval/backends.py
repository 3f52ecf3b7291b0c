"""Where episodes run: in this process, in a local process pool, or on a Ray cluster.

Every backend runs :class:`Job` s through a :class:`Runner` -- one per worker, holding the policy
(loaded once per worker), one env per task and the condition resources -- and yields one
:class:`~arrcoc_steer.eval.rollout.EpisodeRecord` per job, in completion order. A job whose worker
raised (outside the policy) or died comes back as a ``crashed`` record with the reason; the sweep
retries it. The same job gives the same record on every backend: the env, the global RNGs and the
policy are seeded from the job alone, and every backend runs torch with the same thread count
(``threads``, default one; a learned policy's float rounding, hence its path, depends on it).

=========  ================================================================================
backend    runs
=========  ================================================================================
serial     in this process; any policy (also lambdas), no start-up cost
local      a ``spawn`` process pool, ``workers`` processes (default: all cores); the policy
           source is sent to each worker once (a name or checkpoint path is loaded there)
ray        Ray actors, one per worker (default: the cluster's CPUs); ``address`` joins an
           existing cluster; needs ``pip install 'arrcoc-steer[ray]'``
=========  ================================================================================
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, MissingDependencyError, UnknownNameError
from .conditions import Condition, Resources
from .policies import load_policy
from .rollout import EpisodeRecord, crashed_record, episode_key, run_episode

BACKENDS = ("local", "serial", "ray")


@dataclass(frozen=True)
class Job:
    """One episode to run: ``task`` x ``condition`` x ``seed`` (+ what the rollout needs)."""

    task: str
    seed: int
    condition: Condition
    reference: float | None = None
    frames: str | None = None
    max_steps: int | None = None
    attempt: int = 1

    @property
    def key(self) -> str:
        return episode_key(self.task, self.condition.name, self.seed)


class Runner:
    """A worker's state: the policy, an env per task, loaded resources. Call it with a :class:`Job`."""

    def __init__(self, policy: Any, env_kwargs: dict | None = None):
        self.policy = load_policy(policy)
        self.env_kwargs = dict(env_kwargs or {})
        self.resources = Resources()
        self._envs: dict[tuple[str, bool], Any] = {}

    def env(self, task: str, cameras: bool):
        import envs

        if (task, cameras) not in self._envs:
            self._envs[(task, cameras)] = envs.make(task, render_cameras=cameras, **self.env_kwargs)
        return self._envs[(task, cameras)]

    def __call__(self, job: Job) -> EpisodeRecord:
        try:
            cameras = bool(getattr(self.policy, "requires_images", True)) or job.frames is not None
            rec = run_episode(self.policy, self.env(job.task, cameras), job.seed, job.condition,
                              resources=self.resources, reference=job.reference, frames=job.frames,
                              max_steps=job.max_steps)  # fmt: skip
        except Exception as e:
            tb = traceback.format_exc(limit=-6)
            rec = crashed_record(job.task, job.condition.name, job.seed, f"{type(e).__name__}: {e}\n{tb}")
        rec.attempts = job.attempt
        return rec

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def _limit_threads(threads: int) -> None:
    """One worker, ``threads`` threads: set before torch is used (and after, if it was imported)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with torch on ``threads`` threads (None: unchanged), then restore the caller's."""
    torch = sys.modules.get("torch")
    if threads is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------- serial
class SerialBackend:
    """Run jobs one after another in this process, torch on ``threads`` threads (None: the caller's)."""

    name, workers = "serial", 1

    def __init__(self, policy: Any, env_kwargs: dict | None = None, threads: int | None = None):
        self.runner = Runner(policy, env_kwargs)
        self.threads = threads

    def run(self, jobs: Iterable[Job]) -> Iterator[EpisodeRecord]:
        for job in jobs:
            with torch_threads(self.threads):
                record = self.runner(job)
            yield record

    def close(self) -> None:
        self.runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------- process pool
_RUNNER: Runner | None = None


def _init_worker(policy: Any, env_kwargs: dict | None, threads: int) -> None:
    from multiprocessing.util import Finalize

    global _RUNNER
    _limit_threads(threads)
    _RUNNER = Runner(policy, env_kwargs)
    Finalize(_RUNNER, _RUNNER.close, exitpriority=10)  # close the renderers before the process ends


def _run_job(job: Job) -> EpisodeRecord:
    return _RUNNER(job)


def _picklable(policy: Any, backend: str) -> None:
    try:
        pickle.dumps(policy)
    except Exception as e:
        raise ConfigError(
            f"the {backend} backend sends the policy to its worker processes, but {type(policy).__name__} "
            f"cannot be pickled ({type(e).__name__}: {e}). Give a checkpoint path or a policy of a "
            f"module-level class, or run with workers=1 (in this process)") from None


class LocalBackend(SerialBackend):
    """A ``spawn`` process pool of ``workers`` processes, each loading the policy once.

    A worker that dies (segfault, out of memory) breaks the pool: its in-flight jobs come back as
    crashed records and a fresh pool takes the remaining jobs.
    """

    name = "local"

    def __init__(self, policy: Any, workers: int | None = None, env_kwargs: dict | None = None, threads: int = 1):
        self.workers = int(workers or os.cpu_count() or 1)
        _picklable(policy, "local")
        self._args = (policy, env_kwargs, threads)
        self._pool = None

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=self._args)  # fmt: skip

    def run(self, jobs: Iterable[Job]) -> Iterator[EpisodeRecord]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue = deque(jobs)
        inflight: dict = {}
        while queue or inflight:
            if self._pool is None:
                self._pool = self._new_pool()
            while queue and len(inflight) < 2 * self.workers:
                job = queue.popleft()
                inflight[self._pool.submit(_run_job, job)] = job
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in done:
                job = inflight.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool as e:
                    self._drop_pool()
                    yield _crashed(job, f"worker process died ({e})")
                except Exception as e:  # e.g. the record could not be sent back
                    yield _crashed(job, f"{type(e).__name__}: {e}")

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _crashed(job: Job, error: str) -> EpisodeRecord:
    rec = crashed_record(job.task, job.condition.name, job.seed, error)
    rec.attempts = job.attempt
    return rec


# -------------------------------------------------------------------------------------- Ray
def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "The Ray backend") from None
    return ray


class _RayRunner:
    def __init__(self, policy: Any, env_kwargs: dict | None, threads: int):
        _limit_threads(threads)
        self.runner = Runner(policy, env_kwargs)

    def run(self, job: Job) -> EpisodeRecord:
        return self.runner(job)


class RayBackend:
    """Ray actors, one per worker, each loading the policy once.

    Args:
        policy: the policy source (as for :class:`LocalBackend`); put in the object store once.
        workers: number of actors (default: the cluster's CPUs).
        address: a Ray cluster to join (``"auto"``, ``"ray://host:10001"``); None starts a local
            instance unless Ray is already initialised in this process.
        env_kwargs, threads: as for :class:`LocalBackend`.

    File paths in conditions must be readable on every node. An actor that dies (node lost) is
    replaced and its job comes back as a crashed record.
    """

    name = "ray"

    def __init__(self, policy: Any, workers: int | None = None, address: str | None = None,
                 env_kwargs: dict | None = None, threads: int = 1):
        ray = _ray()
        _picklable(policy, "ray")
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
        self.workers = int(workers or ray.cluster_resources().get("CPU", 1))
        self._actor = ray.remote(num_cpus=1)(_RayRunner)
        self._policy = ray.put(policy)
        self._args = (env_kwargs, threads)
        self._actors = [self._actor.remote(self._policy, *self._args) for _ in range(self.workers)]

    def run(self, jobs: Iterable[Job]) -> Iterator[EpisodeRecord]:
        import ray
        from ray.exceptions import RayActorError, RayError

        queue, idle, inflight = deque(jobs), list(self._actors), {}
        while queue or inflight:
            while queue and idle:
                actor, job = idle.pop(), queue.popleft()
                inflight[actor.run.remote(job)] = (actor, job)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, job = inflight.pop(ref)
                try:
                    rec = ray.get(ref)
                except RayActorError as e:
                    self._actors.remove(actor)
                    actor = self._actor.remote(self._policy, *self._args)
                    self._actors.append(actor)
                    rec = _crashed(job, f"Ray actor died: {e}")
                except RayError as e:
                    rec = _crashed(job, f"{type(e).__name__}: {e}")
                idle.append(actor)
                yield rec

    def close(self) -> None:
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._owns:
            ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_backend(name: str, workers: int | None = None, address: str | None = None) -> None:
    """Raise unless ``name``, ``workers`` and ``address`` make a backend; starts nothing."""
    if name not in BACKENDS:
        raise UnknownNameError("backend", name, BACKENDS)
    if address is not None and name != "ray":
        raise ConfigError(f"address= joins a Ray cluster; it needs backend='ray', not {name!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be None (all cores) or an int >= 1, got {workers!r}")


def make_backend(name: str, policy: Any, *, workers: int | None = None, address: str | None = None,
                 env_kwargs: dict | None = None, threads: int = 1):
    """The backend called ``name`` (:data:`BACKENDS`). ``local`` with one worker runs in-process.

    Every backend runs torch on ``threads`` threads per worker, so the same jobs give identical records
    on each of them, also for a learned policy (whose float rounding depends on the thread count).
    """
    check_backend(name, workers, address)
    if name == "serial" or (name == "local" and workers == 1):
        return SerialBackend(policy, env_kwargs, threads)
    if name == "local":
        return LocalBackend(policy, workers, env_kwargs, threads)
    return RayBackend(policy, workers, address, env_kwargs, threads)
