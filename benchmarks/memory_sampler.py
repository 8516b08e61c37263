"""Peak resident memory of every process that does a stage's work, sampled with psutil.

    with ProcessMemory() as memory:   # samples this process and all its descendants
        run_stage()
    memory.peaks()                    # {"driver": MiB, "RetrainActor": MiB, ...}

Ray names its worker processes after what they run (``ray::RetrainActor.run_block``,
``ray::shard_task``, ``ray::RayTrainWorker…``; ``ray::IDLE`` between tasks), so each
sample of a process counts for the name it shows then, and idle samples are left out.
Ray's own daemons (raylet, GCS, dashboard, log monitor) are reported together as
``ray daemons``. A role's figure is the largest resident set sampled (every ``interval``
seconds) of one of its processes.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil

MIB = 2**20
IDLE = "IDLE"
RAY_DAEMONS = "ray daemons"
UNTITLED = "worker (untitled)"  # a Ray worker before it names itself, e.g. while starting
# Ray's own processes: its per-node agents (titled ray::…) and the daemons' command lines.
RAY_AGENTS = {"DashboardAgent", "RuntimeEnvAgent"}
DAEMON_PARTS = ("gcs_server", "/raylet", "/dashboard/", "/autoscaler/", "log_monitor")


def role_of(process: psutil.Process) -> str | None:
    """What ``process`` is doing: its Ray title up to the first ``.`` or space, without a
    named actor's name (``ray::pool-1:RetrainActor.run`` → ``RetrainActor``), ``ray
    daemons`` for Ray's own processes, None when idle or gone."""
    try:
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    title = " ".join(command)
    if title.startswith("ray::"):
        name = title[len("ray::") :].split(" ")[0].split(".")[0].split(":")[-1]
        if name.startswith(IDLE):
            return None
        return RAY_DAEMONS if name in RAY_AGENTS else name
    return RAY_DAEMONS if any(part in title for part in DAEMON_PARTS) else UNTITLED


class ProcessMemory:
    """Samples the resident memory of this process (``driver``) and its descendants in a
    background thread while the ``with`` block runs; each sample counts for the role the
    process shows at that moment (a pooled Ray worker may run one task, then another)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._driver = psutil.Process(os.getpid())
        self._peak: dict[str, int] = {}  # role -> largest RSS of one of its processes, bytes
        self._pids: dict[str, set[int]] = {}  # role -> the processes seen in it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessMemory:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                self._sample()
                return

    def _sample(self) -> None:
        self._record(self._driver, "driver")
        for child in self._driver.children(recursive=True):
            role = role_of(child)
            if role is not None:
                self._record(child, role)

    def _record(self, process: psutil.Process, role: str) -> None:
        try:
            rss = process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        self._peak[role] = max(self._peak.get(role, 0), rss)
        self._pids.setdefault(role, set()).add(process.pid)

    def peaks(self) -> dict[str, float]:
        """Role → the largest resident memory sampled of one of its processes, MiB."""
        return {role: self._peak[role] / MIB for role in sorted(self._peak)}

    def processes(self) -> dict[str, int]:
        """Role → how many processes were seen in it."""
        return {role: len(self._pids[role]) for role in sorted(self._pids)}
