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
# second round. With ``build``, a learner is built on the CPU first. (How often glibc faults
# at its defaults depends on the heap's history: with mp_ray.learners imported, as in every
# process that trains, this pattern faults ~28,000 times a round.)
PROGRAM = """
import resource, sys
import numpy as np, torch
from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner
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
    assert defaults > 5_000  # 4 MiB is 1,024 pages: glibc maps and faults them in again
    assert second_round_faults("build") < defaults / 10
    assert second_round_faults("build", **{OPT_OUT_ENV: "0"}) > defaults / 2
