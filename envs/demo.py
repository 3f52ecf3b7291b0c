"""Run the scripted expert on a few tasks, print success, and write an agentview | wrist video.

>>> from envs.demo import run_expert_demo
>>> run_expert_demo(["LiftRedBlock"], episodes=1, video_path=None, seed=0)
{'LiftRedBlock': 1.0}
"""

from __future__ import annotations

import os

import numpy as np


def run_expert_demo(
    tasks: list[str],
    episodes: int = 1,
    video_path: str | os.PathLike | None = "expert_demo.mp4",
    seed: int = 0,
    image_size: int = 128,
    modifiers=None,
    verbose: bool = False,
) -> dict[str, float]:
    """Run ``episodes`` expert episodes per task; return {task: success rate}.

    When ``video_path`` is given, every frame of every episode goes into one mp4 (10 fps), agentview on
    the left and the wrist camera on the right, with a short white bar between episodes.
    ``modifiers``: a :class:`envs.Modifiers`, a dict of its fields, or None (neutral).
    """
    import envs

    from .expert import ScriptedExpert

    writer = None
    if video_path is not None:
        import imageio.v2 as imageio

        writer = imageio.get_writer(str(video_path), fps=10, macro_block_size=1)
    success: dict[str, float] = {}
    try:
        for task in tasks:
            env = envs.make(task, image_size=image_size, render_cameras=writer is not None)
            wins = 0
            try:
                for k in range(episodes):
                    obs, info = env.reset(seed=seed + k, options={"modifiers": modifiers})
                    expert = ScriptedExpert(env)
                    done = False
                    while not done:
                        if writer is not None:
                            writer.append_data(np.concatenate([obs["agentview"], obs["wrist"]], axis=1))
                        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
                        done = terminated or truncated
                    if writer is not None:
                        writer.append_data(np.concatenate([obs["agentview"], obs["wrist"]], axis=1))
                        writer.append_data(np.full_like(np.concatenate([obs["agentview"]] * 2, 1), 255))
                    wins += bool(info["success"])
                    if verbose:
                        print(f"{task} seed {seed + k}: {'success' if info['success'] else 'FAIL'} "
                              f"in {info['step']} steps -- {obs['instruction']!r}")  # fmt: skip
            finally:
                env.close()
            success[task] = wins / max(episodes, 1)
    finally:
        if writer is not None:
            writer.close()
    return success
