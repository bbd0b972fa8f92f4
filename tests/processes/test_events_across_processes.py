"""Two real processes on one PostgreSQL database report every engine event exactly once.

Each runs `tests/support/event_worker.py`, whose `def` listener writes every event it
gets to a ledger table, on a connection of its own: that is what the test counts, by
process, against the library's tables.
"""

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import JobRunState
from fastapi_jobpoller._storage.tables import Tables
from tests.helpers import (
    EVENT_OF_RUN_STATE,
    REPOSITORY,
    START_TIMEOUT,
    STOP_TIMEOUT,
    WORK_TIMEOUT,
    wait_for_workers,
)
from tests.support.event_worker import events_table
from tests.support.process_worker import ledger_table

WORKER_SETTINGS = {
    "idle_wait_seconds": 0.05,
    "lease_seconds": 5.0,
    "shutdown_grace_seconds": 5.0,
    "callback_retry_seconds": 0.05,
    "thread_pool_size": 4,
}


class Worker:
    """One `tests/support/event_worker.py` process: commands on stdin, answers on stdout."""

    def __init__(self, name: str, env: dict[str, str], arguments: list[str], log: Path) -> None:
        self.name, self.log_path = name, log
        self._log: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.event_worker", *arguments],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        self.pid = self.process.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def log(self) -> str:
        self._log.flush()
        return f"--- stderr of worker {self.name} ---\n{self.log_path.read_text()[-4000:]}"

    def expect(self, prefix: str, timeout: float = WORK_TIMEOUT) -> str:
        give_up_at = time.monotonic() + timeout
        while time.monotonic() < give_up_at:
            try:
                line = self._lines.get(timeout=max(give_up_at - time.monotonic(), 0.01))
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"worker {self.name} exited before {prefix!r}\n{self.log()}")
            if line.startswith(prefix):
                return line
        pytest.fail(f"worker {self.name} did not say {prefix!r} in {timeout} s\n{self.log()}")

    def command(self, answer: str, **command: Any) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.expect(answer)

    def stop(self) -> None:
        """SIGTERM, as a process manager would; check it exited cleanly."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=STOP_TIMEOUT) == 0, self.log()
        self.expect("STOPPED", STOP_TIMEOUT)
        unexpected = [
            line
            for line in self.log_path.read_text().splitlines()
            if line.startswith(("ERROR", "CRITICAL", "Traceback"))
            and "poll_callback_failed" not in line  # the test's callback fails on purpose
        ]
        assert unexpected == [], self.log()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        self._reader.join(timeout=STOP_TIMEOUT)
        self._log.close()


@dataclass
class SharedDatabase:
    engine: sa.Engine
    tables: Tables
    events: sa.Table
    calls: sa.Table

    def rows(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(statement).all())

    def count(self, statement: sa.Select[Any]) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())


@pytest.fixture
def shared_database(postgresql_url: str) -> Iterator[SharedDatabase]:
    prefix = f"ev{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(postgresql_url)
    metadata = sa.MetaData()
    database = SharedDatabase(
        engine,
        Tables(prefix),
        events_table(prefix + "events", metadata),
        ledger_table(prefix + "calls", metadata),
    )
    try:
        metadata.create_all(engine)
        yield database
    finally:
        database.tables.metadata.drop_all(engine)
        metadata.drop_all(engine)
        engine.dispose()


@pytest.mark.processes
@pytest.mark.postgresql
def test_two_processes_on_one_database_report_every_occurrence_exactly_once(
    postgresql_url: str, shared_database: SharedDatabase, tmp_path: Path
) -> None:
    polls_per_worker, attempts = 30, 3
    prefix = shared_database.tables.polls.name.removesuffix("polls")
    settings = {**WORKER_SETTINGS, "database_url": postgresql_url, "table_prefix": prefix}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOLLER_")}
    env.update({f"JOBPOLLER_{k.upper()}": str(v) for k, v in settings.items()})
    arguments = ["--events", shared_database.events.name, "--calls", shared_database.calls.name]
    workers = [Worker(name, env, arguments, tmp_path / f"{name}.log") for name in "ab"]
    try:
        a, b = workers
        pids = {}
        for worker in workers:
            _, pid, _ = worker.expect("READY", START_TIMEOUT).split()
            pids[worker.name] = int(pid)
        for worker in workers:
            worker.command(
                "SUBMITTED",
                op="submit",
                count=polls_per_worker,
                id_prefix=worker.name,
                finish_after=attempts,
                options={"interval": 0.02, "callbacks": ["fails_first"]},
            )
        a.command("ADDED", op="add_job", job_id="ticker", seconds=0.1)
        polls, runs = shared_database.tables.polls, shared_database.tables.job_runs
        wait_for_workers(
            lambda: (
                shared_database.count(
                    sa.select(sa.func.count())
                    .select_from(polls)
                    .where(polls.c.state == "succeeded", polls.c.callbacks_pending.is_(False))
                )
                == 2 * polls_per_worker
                and shared_database.count(
                    sa.select(sa.func.count()).select_from(runs).where(runs.c.state == "succeeded")
                )
                >= 5
            ),
            workers,
            "every poll ended with its callbacks delivered, and the job ran",
        )
        b.command("PAUSED", op="pause_job", job_id="ticker")
        wait_for_workers(
            lambda: (
                shared_database.count(
                    sa.select(sa.func.count())
                    .select_from(runs)
                    .where(runs.c.state.in_(("running", "queued")))
                )
                == 0
            ),
            workers,
            "the job's last run finished",
        )
        a.command("REMOVED", op="remove_job", job_id="ticker")
        for worker in workers:
            worker.stop()
    finally:
        for worker in workers:
            worker.close()

    events = shared_database.rows(sa.select(shared_database.events))
    by_pid = {pid: name for name, pid in pids.items()}
    assert Counter(
        (e.event, by_pid[e.pid]) for e in events if e.event.startswith("scheduler_")
    ) == {
        ("scheduler_started", "a"): 1,
        ("scheduler_started", "b"): 1,
        ("scheduler_stopped", "a"): 1,
        ("scheduler_stopped", "b"): 1,
    }
    poll_ids = {f"{name}{n:04d}" for name in "ab" for n in range(polls_per_worker)}
    poll_events: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for event in events:
        if event.poll_id is not None:
            poll_events[event.poll_id].append(event)
    assert set(poll_events) == poll_ids
    for poll_id, rows in poll_events.items():
        (submitted,) = (r for r in rows if r.event == "poll_submitted")
        assert by_pid[submitted.pid] == poll_id[0], "submitted by the process that was asked"
        attempts_of = defaultdict(list)
        for row in rows:
            attempts_of[row.event].append(row.attempt)
        assert {k: sorted(v) for k, v in attempts_of.items()} == {
            "poll_submitted": [None],
            "poll_attempt_started": [1, 2, 3],
            "poll_pending": [1, 2],
            "poll_succeeded": [3],
            "poll_callback_failed": [None],
        }, poll_id
        (callback_failed,) = (r for r in rows if r.event == "poll_callback_failed")
        assert callback_failed.callback == "fails_first"
    attempt_pids = {e.pid for e in events if e.event == "poll_attempt_started"}
    assert attempt_pids == set(pids.values()), "the attempts did not spread over both processes"
    calls = Counter(
        (row.key, row.kind) for row in shared_database.rows(sa.select(shared_database.calls))
    )
    assert all(calls[(poll_id, "call")] == attempts for poll_id in poll_ids)
    assert all(calls[(poll_id, "callback")] == 2 for poll_id in poll_ids)

    job_events = [e for e in events if e.job_id is not None]
    assert Counter((e.event, by_pid[e.pid]) for e in job_events if e.run_id is None) == {
        ("job_added", "a"): 1,
        ("job_paused", "b"): 1,
        ("job_removed", "a"): 1,
    }
    stored_runs = {
        r.id: r for r in shared_database.rows(sa.select(runs).where(runs.c.job_id == "ticker"))
    }
    outcomes = [e for e in job_events if e.run_id is not None and e.event != "job_submitted"]
    assert Counter(e.run_id for e in outcomes) == dict.fromkeys(stored_runs, 1)
    for event in outcomes:
        run = stored_runs[event.run_id]
        assert event.event == EVENT_OF_RUN_STATE[JobRunState(run.state)].value
        assert (event.attempt, event.outcome) == (run.attempt, run.state)
    executed = {e.run_id for e in outcomes if e.event in ("job_executed", "job_error")}
    submitted_runs = Counter(e.run_id for e in job_events if e.event == "job_submitted")
    assert submitted_runs == dict.fromkeys(executed, 1)
    assert Counter(
        row.key
        for row in shared_database.rows(sa.select(shared_database.calls))
        if row.kind == "tick"
    )["ticker"] == len(executed)
