"""CPU and memory of the app processes and of PostgreSQL, sampled from /proc via psutil.

PostgreSQL backends are told apart by `application_name`: each app connects with its
own, and the sampler asks `pg_stat_activity` for their process ids every sample.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["Sampler", "machine_busy_cores"]

_PERIOD = 0.5


def _cpu(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


def _children_cpu(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.children_user + times.children_system)


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times) - idle)


def machine_busy_cores(seconds: float = 2.0) -> float:
    """Return how many cores the whole machine kept busy over the next `seconds`."""
    before = _busy_seconds()
    time.sleep(seconds)
    return (_busy_seconds() - before) / seconds


@dataclass
class _Track:
    """First and last CPU seconds seen for each process of a group."""

    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def see(self, pid: int, cpu: float | None) -> None:
        if cpu is None:
            return
        self.first.setdefault(pid, cpu)
        self.last[pid] = cpu

    def seconds(self, only: set[int] | None = None) -> float:
        pids = self.last if only is None else only & self.last.keys()
        return sum(self.last[pid] - self.first[pid] for pid in pids)


class Sampler:
    """Samples every half second until stopped; `stop()` returns the figures."""

    def __init__(
        self,
        app_pids: list[int],
        *,
        backend_pids: Callable[[], list[int]] | None = None,
    ) -> None:
        self._apps = [psutil.Process(pid) for pid in app_pids]
        self._extra: list[psutil.Process] = []
        self._backend_pids = backend_pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._app = _Track()
        self._backends = _Track()
        self._postgres = _Track()
        self._postgres_children = _Track()
        self._postgres_alive: set[int] = set()
        self._others = _Track()
        self._backend_processes: dict[int, psutil.Process] = {}
        self.rss_peak = 0
        self.rss_last = 0

    def add(self, pid: int) -> None:
        """Also count this process (the load generator) apart from the machine's rest."""
        self._extra.append(psutil.Process(pid))

    def start(self) -> None:
        self._started = time.time()
        self._busy_before = _busy_seconds()
        self._sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_PERIOD):
            self._sample()

    def _sample(self) -> None:
        rss = 0
        for process in self._apps:
            self._app.see(process.pid, _cpu(process))
            try:
                rss += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if self._apps:
            self.rss_last = rss
            self.rss_peak = max(self.rss_peak, rss)
        for process in self._extra:
            self._others.see(process.pid, _cpu(process))
        if self._backend_pids is not None:
            try:
                pids = self._backend_pids()
            except Exception:  # the monitoring query must not end the run
                pids = []
            for pid in pids:
                if pid not in self._backend_processes:
                    try:
                        self._backend_processes[pid] = psutil.Process(pid)
                    except psutil.NoSuchProcess:
                        continue
                self._backends.see(pid, _cpu(self._backend_processes[pid]))
        postgres = [
            process
            for process in psutil.process_iter(["username", "name", "ppid"])
            if process.info["username"] == "postgres" or process.info["name"] == "postgres"
        ]
        postgres_pids = {process.pid for process in postgres}
        self._postgres_alive = postgres_pids
        for process in postgres:
            self._postgres.see(process.pid, _cpu(process))
            if process.info["ppid"] not in postgres_pids:
                # The postmaster: backends that exited (pool overflow connections come and
                # go) leave their CPU time in its children's times.
                self._postgres_children.see(process.pid, _children_cpu(process))

    def stop(self) -> dict[str, Any]:
        """Stop sampling; return CPU in % of one core and RSS in MiB."""
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = max(time.time() - self._started, 1e-9)
        machine = (_busy_seconds() - self._busy_before) / wall
        app = self._app.seconds() / wall
        backends = self._backends.seconds() / wall
        # Processes that exited are counted once, through the postmaster's children times.
        postgres = (
            self._postgres.seconds(self._postgres_alive) + self._postgres_children.seconds()
        ) / wall
        extra = self._others.seconds() / wall
        return {
            "cpu_app": 100 * app,
            "cpu_pg_backends": 100 * backends if self._backend_pids else None,
            "cpu_pg_all": 100 * postgres,
            "cpu_loadgen": 100 * extra,
            "cpu_machine": 100 * machine,
            "cpu_rest": 100 * (machine - app - postgres - extra),
            "rss_peak_mib": self.rss_peak / 2**20,
            "rss_end_mib": self.rss_last / 2**20,
        }
