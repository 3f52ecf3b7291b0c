"""glibc keeps freed memory for reuse: large blocks stop being unmapped and faulted back in, in the
process that asks and in the processes it starts afterwards (spawned evaluation and collection workers)."""

import os
import platform
import subprocess
import sys

import pytest

from arrcoc_steer import cli
from arrcoc_steer.allocator import OPT_OUT, keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Allocates and frees a 64 MB array 20 times (glibc's default maps each one afresh, above its 32 MB
# mmap threshold) and prints the page faults that cost. argv[1]: "keep" sets the allocator first,
# "child" sets it and then measures in a child process that only inherits the environment.
PROBE = """
import resource, subprocess, sys
import numpy as np
if sys.argv[1] in ("keep", "child"):
    from arrcoc_steer.allocator import keep_freed_memory
    assert keep_freed_memory()
if sys.argv[1] == "child":
    sys.exit(subprocess.run([sys.executable, "-c", sys.argv[2], "inherit", sys.argv[2]]).returncode)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.ones(8 << 20)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"  # 4 KB pages, so faults count pages touched
    out = subprocess.run([sys.executable, "-c", PROBE, mode, PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_back_in():
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 20 * 16_000  # every 64 MB array faulted in page by page: 16,384 pages of 4 KB
    assert kept < default / 5, (kept, default)


@glibc
def test_processes_started_afterwards_inherit_the_setting():
    assert page_faults("child") < page_faults("inherit") / 5


def test_opt_out_and_the_users_own_malloc_tunables_keep_glibc_defaults(monkeypatch):
    monkeypatch.setenv(OPT_OUT, "1")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert keep_freed_memory() is False
    assert "GLIBC_TUNABLES" not in os.environ
    monkeypatch.delenv(OPT_OUT)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert keep_freed_memory() is False
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"


def test_every_cli_command_starts_with_memory_kept(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["envs", "--suite", "goal"]) == 0
    assert calls == [1] and "goal:" in capsys.readouterr().out
