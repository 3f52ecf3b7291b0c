import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs


@pytest.mark.filterwarnings("ignore:.*Box observation space m.* value is .*infinity")
@pytest.mark.parametrize("env_id", sorted(i for i in gymnasium.registry if i.startswith("arrcoc/")))
def test_check_env(env_id):
    env = gymnasium.make(env_id, render_mode="rgb_array")
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


def test_every_task_is_registered():
    ids = {i for i in gymnasium.registry if i.startswith("arrcoc/")}
    assert ids == {t.env_id for t in envs.TASKS.values()}
