import subprocess
import sys

import arrcoc_steer


def test_every_exported_name_resolves():
    for name in arrcoc_steer.__all__:
        assert getattr(arrcoc_steer, name) is not None, name


def test_importing_the_package_loads_no_heavy_dependency():
    code = "import sys, arrcoc_steer; print(sorted(m for m in ('torch', 'transformers', 'nnsight', 'mujoco') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "arrcoc_steer.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("demo", "envs", "collect", "train", "atlas", "concepts", "direction", "eval", "sweep", "report"):
        assert f"    {verb}" in out, verb
