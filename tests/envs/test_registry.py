import subprocess
import sys

import gymnasium
import pytest

import envs
from arrcoc_steer.errors import UnknownNameError
from envs.modifiers import parse


def test_suites_mirror_libero():
    assert list(envs.SUITES) == ["spatial", "object", "goal", "long"]
    assert [len(envs.SUITES[s]) for s in envs.SUITES] == [4, 4, 4, 3]
    assert len(envs.TASKS) == 15 == len(envs.list_tasks())
    for name, spec in envs.TASKS.items():
        assert name in envs.list_tasks(spec.suite)
        assert len(spec.paraphrases) >= 3 and len(set(spec.paraphrases)) == len(spec.paraphrases)
        assert spec.env_id == f"arrcoc/{name}-v0" and spec.env_id in gymnasium.registry


def test_paraphrases_are_neutral():
    # modifier words must come only from the modifiers, never from the base instruction
    for spec in envs.TASKS.values():
        for p in spec.paraphrases:
            assert parse(p).is_neutral, p


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'LiftRedBlock'"):
        envs.make("LiftRedBlok")
    with pytest.raises(UnknownNameError, match="Did you mean 'spatial'"):
        envs.list_tasks("spatail")
    with pytest.raises(LookupError):
        envs.get_task("nope")


def test_get_task_accepts_gym_id():
    assert envs.get_task("arrcoc/LiftRedBlock-v0") is envs.TASKS["LiftRedBlock"]


def test_gymnasium_make_with_module_prefix_without_import():
    code = (
        "import gymnasium, sys; env = gymnasium.make('envs:arrcoc/LiftRedBlock-v0', render_cameras=False);"
        "obs, info = env.reset(seed=0); print(info['task']); env.close();"
        "assert 'torch' not in sys.modules, 'envs must not import torch'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "LiftRedBlock"
