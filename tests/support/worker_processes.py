"""Worker processes for the tests of tests/processes: a shared PostgreSQL database with a
ledger beside the library's tables, and `process_worker.py` (or `jobpoller worker`)
processes that take commands on stdin. The fixtures that use them are in
tests/processes/conftest.py."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller._storage.tables import Tables
from tests.helpers import REPOSITORY, START_TIMEOUT, STOP_TIMEOUT
from tests.support import process_worker
from tests.support.process_worker import LEDGER_SUFFIX, ledger_table

__all__ = [
    "BASE_SETTINGS",
    "SharedDatabase",
    "StartWorkers",
    "Worker",
    "shared_database_at",
    "workers_started",
]

WORKER_SCRIPT = Path(process_worker.__file__)
# Worker settings, all passed as JOBPOLLER_* environment variables.
BASE_SETTINGS = {
    "idle_wait_seconds": 0.05,
    "default_poll_interval": 0.05,
    "lease_seconds": 5.0,
    "shutdown_grace_seconds": 5.0,
    "thread_pool_size": 8,
}


@dataclass
class SharedDatabase:
    """One PostgreSQL database, a table prefix of our own, and the ledger beside it."""

    url: str
    prefix: str
    engine: sa.Engine
    tables: Tables
    ledger: sa.Table

    def rows(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(statement).all())

    def ledger_rows(self, kind: str) -> list[sa.Row[Any]]:
        ledger = self.ledger
        return self.rows(
            sa.select(ledger.c.key, ledger.c.pid, ledger.c.seq, ledger.c.at)
            .where(ledger.c.kind == kind)
            .order_by(ledger.c.at, ledger.c.id)
        )

    def polls(self) -> list[sa.Row[Any]]:
        return self.rows(sa.select(self.tables.polls).order_by(self.tables.polls.c.id))

    def count_polls(self, *, finished: bool) -> int:
        polls = self.tables.polls
        query = sa.select(sa.func.count()).select_from(polls)
        if finished:
            query = query.where(polls.c.state.not_in(("pending", "running")))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())


@contextmanager
def shared_database_at(postgresql_url: str) -> Iterator[SharedDatabase]:
    """A fresh prefix in the PostgreSQL test database; every table dropped afterwards."""
    prefix = f"proc{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(postgresql_url)
    metadata = sa.MetaData()
    ledger = ledger_table(prefix + LEDGER_SUFFIX, metadata)
    tables = Tables(prefix)
    try:
        metadata.create_all(engine)
        yield SharedDatabase(postgresql_url, prefix, engine, tables, ledger)
    finally:
        tables.metadata.drop_all(engine)
        metadata.drop_all(engine)
        engine.dispose()


class Worker:
    """One `process_worker.py` process: its stdin takes commands, its stdout answers."""

    def __init__(
        self, name: str, env: dict[str, str], log_path: Path, *, argv: list[str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[str] = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, *(argv or [str(WORKER_SCRIPT)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            cwd=REPOSITORY,
        )
        self.pid = self.process.pid
        self.worker_id = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def log(self) -> str:
        """Return the end of the worker's stderr, for failure messages."""
        self._log.flush()
        return f"--- stderr of worker {self.name} (pid {self.pid}) ---\n" + "".join(
            self.log_path.read_text().splitlines(keepends=True)[-40:]
        )

    def expect(self, prefix: str, *, timeout: float) -> str:
        """Wait for the next stdout line starting with `prefix` and return it."""
        give_up_at = time.monotonic() + timeout
        while True:
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"worker {self.name} did not say {prefix!r} in {timeout} s\n{self.log()}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(timeout=STOP_TIMEOUT)
                pytest.fail(
                    f"worker {self.name} exited ({self.process.returncode}) "
                    f"before saying {prefix!r}\n{self.log()}"
                )
            if line.startswith(prefix):
                return line

    def ready(self) -> None:
        """Wait until the worker's poller runs."""
        _, pid, self.worker_id = self.expect("READY", timeout=START_TIMEOUT).split()
        assert int(pid) == self.pid

    def send(self, command: dict[str, Any]) -> None:
        """Write one command to the worker's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def check_alive(self) -> None:
        """Fail the test at once if the worker died."""
        if self.process.poll() is not None:
            pytest.fail(f"worker {self.name} died ({self.process.returncode})\n{self.log()}")

    def stop(self) -> None:
        """Stop the worker with SIGTERM, as a process manager would; check it ended cleanly.

        Cleanly: exit status 0, `STOPPED` said, and no error logged in its whole life.
        """
        self.process.send_signal(signal.SIGTERM)
        try:
            returncode = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.name} ignored SIGTERM for {STOP_TIMEOUT} s\n{self.log()}")
        assert returncode == 0, self.log()
        self.expect("STOPPED", timeout=STOP_TIMEOUT)
        self._log.flush()
        errors = [
            line
            for line in self.log_path.read_text().splitlines()
            if line.startswith(("ERROR", "CRITICAL", "Traceback"))
        ]
        assert not errors, f"worker {self.name} logged errors\n{self.log()}"

    def pause(self) -> None:
        """SIGSTOP the worker: alive, with its connections open, but doing nothing."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused worker."""
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the worker: no shutdown code runs, its leases stay as they were."""
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """Kill the process if it still runs and release its pipes and log file."""
        try:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            if self.process.stdin is not None:
                try:
                    self.process.stdin.close()
                except BrokenPipeError:
                    pass
            self._reader.join(timeout=STOP_TIMEOUT)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._log.close()


StartWorkers = Callable[..., list[Worker]]


@contextmanager
def workers_started(shared_database: SharedDatabase, tmp_path: Path) -> Iterator[StartWorkers]:
    """Start worker processes on the shared database; each one is killed at the end."""
    started: list[Worker] = []
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOLLER_")}

    def start(*names: str, argv: list[str] | None = None, **settings: object) -> list[Worker]:
        """Start one process per name; `argv` (after python) instead of process_worker.py,
        not waited for (it says nothing on stdout)."""
        values = {
            **BASE_SETTINGS,
            "database_url": shared_database.url,
            "table_prefix": shared_database.prefix,
            **settings,
        }
        env = {**inherited, **{f"JOBPOLLER_{k.upper()}": str(v) for k, v in values.items()}}
        workers = []
        for name in names:
            worker = Worker(name, env, tmp_path / f"worker-{name}.log", argv=argv)
            started.append(worker)
            workers.append(worker)
        for worker in workers if argv is None else []:  # started together, booting side by side
            worker.ready()
        return workers

    try:
        yield start
    finally:
        for worker in started:
            worker.close()
