import pytest

import envs


@pytest.fixture
def make_env():
    """Make envs that are closed after the test (renderers must be freed before interpreter exit)."""
    made = []

    def _make(task="PutRedBlockInTray", **kwargs):
        env = envs.make(task, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()
