"""The env API in ten lines: make a task, reset, step with the scripted expert (or random actions)."""

import envs
from envs.expert import ScriptedExpert

env = envs.make("PickRedBlockIntoTray", image_size=128)  # or gymnasium.make("arrcoc/PickRedBlockIntoTray-v0")
obs, info = env.reset(seed=0, options={"modifiers": {"speed": "fast"}})
print(obs["instruction"], obs["agentview"].shape, obs["wrist"].shape, obs["state"])
expert = ScriptedExpert(env)  # privileged; replace with env.action_space.sample() or your policy
for t in range(env.unwrapped.max_episode_steps):
    obs, reward, terminated, truncated, info = env.step(expert.act(obs))
    if terminated or truncated:
        break
print(f"success={info['success']} after {t + 1} steps; block at {info['object_poses']['red_block'][:3].round(3)}")
env.close()
