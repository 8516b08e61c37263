"""The allocator settings of a process that trains on a CPU (mp_ray/learners/allocator.py):
freed multi-megabyte blocks are reused instead of mapped and faulted in again. Each case runs
in a fresh interpreter, since the settings are the process's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from mp_ray.learners.allocator import OPT_OUT_ENV

# Allocations of 1–4 MiB freed in an interleaved order, twice; prints the page faults of the
# second round. glibc's thresholds move with the sizes a process has freed so far, so the
# process first sets them to glibc's starting values (128 KiB, fixed), where every such block
# is mapped and faulted in anew; with ``build``, a learner is then built on the CPU.
PROGRAM = """
import ctypes, ctypes.util, resource, sys
import numpy as np, torch
from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner
from mp_ray.learners.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
libc = ctypes.CDLL(ctypes.util.find_library("c"))
assert libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024) and libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
if sys.argv[1] == "build":
    make_learner(LearnerConfig(kind="ridge"), np.eye(4), np.arange(4.0), 1)

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(20):
        a = torch.ones(2**18 * (1 + i % 3))
        b = torch.ones(2**19)
        del a
        c = torch.ones(2**20)
        del b, c
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults()
print(faults())
"""


def second_round_faults(mode: str, **env: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_building_a_cpu_learner_keeps_freed_memory_for_reuse():
    defaults = second_round_faults("plain")
    assert defaults > 5_000  # 60 blocks of 1–4 MiB (256–1,024 pages each), all faulted in
    assert second_round_faults("build") < defaults / 10
    assert second_round_faults("build", **{OPT_OUT_ENV: "0"}) > defaults / 2
