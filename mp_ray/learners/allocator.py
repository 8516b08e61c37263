"""The C allocator of a process that trains models on a CPU: freed memory kept for reuse.

A batched training step allocates multi-megabyte temporaries (a chunk of CNNs' activations,
a block of SVMs' ``(problems, n)`` arrays) and frees them at once, step after step. glibc's
malloc serves blocks above its mmap threshold with fresh mappings and gives free memory
above its trim threshold at the top of a heap back to the system, so the same memory is
mapped and faulted in again at every step. Training 136 digits_cnn models (configs/
digits_cnn.yaml, 3 s on one or two threads) took 90–99 thousand page faults at glibc's
defaults and 2.5–6.6 thousand with the settings below. What a fault costs depends on the
host: on a shared 2-core virtual machine, in one period the same fit ran at 0.17–0.19 thread-ms
a model-step at the defaults against 0.14 with these settings (a grouped convolution of 17
CNNs alone, 460–500 against 156–161 µs, in every period), in another both ran at 0.14–0.15.

:func:`retain_freed_memory` sets glibc's mmap threshold to its largest value (32 MiB on
64-bit systems) and its trim threshold to ``TRIM_THRESHOLD``, once per process, so a process
holds up to that much freed memory for reuse beyond what it uses. It does nothing on other C
libraries, or when the environment sets ``MP_RAY_RETAIN_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from functools import cache

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on a 64-bit system (4 MiB · sizeof(long)).
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 256 * 2**20
OPT_OUT_ENV = "MP_RAY_RETAIN_FREED_MEMORY"


@cache
def retain_freed_memory() -> bool:
    """Apply the allocator settings of the module docstring to this process, once; whether
    they are in force."""
    if os.environ.get(OPT_OUT_ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
