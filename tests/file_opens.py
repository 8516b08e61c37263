"""Counting how often any process on this machine opens the files of some folders (Linux
inotify): the check that work spread over Ray processes reads a store's chunks only as often
as it should.

    with FileOpens([f"{uri}/params/c/{block}" for block in range(n_blocks)]) as opens:
        run_stage()
    opens.counts        # {".../params/c/0": 5, ...}: opens of the files in each folder
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections import Counter

IN_OPEN = 0x20  # <sys/inotify.h>: a file in the watched folder was opened
IN_CLOSE_NOWRITE = 0x10  # ... and closed after reading
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class FileOpens:
    """While open, counts the opens of files in each of ``folders`` (not below them).

    The kernel merges an event into the one before it when they are identical and that one
    is unread, so two opens of a file count as two only when a close (also watched) comes
    between them: readers of the same file must take turns."""

    def __init__(self, folders: list[str]) -> None:
        self.folders = folders
        self.counts: Counter[str] = Counter()
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = -1
        self._watches: dict[int, str] = {}

    def __enter__(self) -> FileOpens:
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for folder in self.folders:
            watch = self._libc.inotify_add_watch(
                self._fd, os.fsencode(folder), IN_OPEN | IN_CLOSE_NOWRITE
            )
            if watch < 0:
                raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
            self._watches[watch] = folder
        return self

    def __exit__(self, *exception: object) -> None:
        self._drain()
        os.close(self._fd)

    def _drain(self) -> None:
        """Count every event queued so far."""
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(data):
                watch, mask, _, length = _EVENT.unpack_from(data, offset)
                if mask & IN_OPEN:
                    self.counts[self._watches[watch]] += 1
                offset += _EVENT.size + length
