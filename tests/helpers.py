"""Waits and small helpers shared by the test modules, so that none of them keeps a copy.

Fixtures live in the conftest.py files (tests/conftest.py for every test, and one per
folder); what a test calls or imports by name lives here. Every wait gives up after a
bounded time, so a bug fails a test and never hangs it.
"""

import asyncio
import dataclasses
import logging
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from queue import Queue
from typing import Any, Protocol

import anyio
import anyio.to_thread
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_jobpoller import (
    DateTrigger,
    Done,
    Event,
    EventType,
    Failed,
    JobPoller,
    JobRunInfo,
    JobRunState,
    Pending,
    PollInfo,
    mount_scheduler,
)
from tests.conftest import FAST_SETTINGS, PollerFactory

# The repository: the folder that holds src/, tests/, docs/ and examples/.
REPOSITORY = Path(__file__).resolve().parent.parent

# For tests of behaviour that runs no query that differs between databases: SQLite alone.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# A date no test reaches: a job with this trigger runs only when told to.
FAR_FUTURE = DateTrigger(run_date="2100-01-01T00:00:00+00:00")


# -- waits -----------------------------------------------------------------------------

# Every wait gives up after this long, so a bug fails a test, never hangs it. What it
# waits for takes a fraction of a second; nothing asserts speed with it.
WAIT = 15.0
# How long to watch for something that must NOT happen (a second attempt, a second
# callback or event, a count that moves on): many times the 0.01 to 0.05 s intervals and
# idle waits of the tests.
QUIET = 0.3


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = WAIT) -> float:
    """Check `condition` every 20 ms until it holds; return when (monotonic), or fail."""
    give_up_at = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up_at:
            pytest.fail(f"{what}: not reached in {timeout} s")
        time.sleep(0.02)
    return time.monotonic()


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait, on the event loop, until `condition` holds; fail after `WAIT` seconds."""
    with anyio.fail_after(WAIT):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def wait_event(event: asyncio.Event) -> None:
    with anyio.fail_after(WAIT):
        await event.wait()


async def wait_thread_event(event: threading.Event) -> None:
    assert await anyio.to_thread.run_sync(event.wait, WAIT), "the event was never set"


async def poll_until(
    poller: JobPoller, poll_id: str, predicate: Callable[[PollInfo], bool]
) -> PollInfo:
    """Return the poll as soon as `predicate` holds for it; fail after `WAIT` seconds."""
    with anyio.fail_after(WAIT):
        while True:
            poll = await poller.get_poll(poll_id)
            if predicate(poll):
                return poll
            await anyio.sleep(0.01)


async def ended(poller: JobPoller, poll_id: str) -> PollInfo:
    """Wait for the poll to end and its callbacks to run; fail if it does not in time.

    Like `wait_for_poll`, but looking every 10 ms keeps the tests quick.
    """
    return await poll_until(poller, poll_id, lambda p: p.is_terminal and not p.callbacks_pending)


RunsCheck = Callable[[list[JobRunInfo]], bool]


async def wait_for_runs(
    poller: JobPoller, job_id: str | None, check: RunsCheck, *, state: JobRunState | None = None
) -> list[JobRunInfo]:
    """Return job runs (oldest tick first) once `check` accepts them; fail at the deadline.

    The runs of `job_id`, or of every job if None; only those in `state` if given.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + WAIT
    while True:
        runs = list(reversed(await poller.list_job_runs(job_id=job_id, state=state, limit=1000)))
        if check(runs):
            return runs
        if loop.time() > give_up_at:
            raise AssertionError(f"gave up after {WAIT} s; runs of {job_id!r}: {runs}")
        await asyncio.sleep(0.02)


async def runs_reach(poller: JobPoller, state: JobRunState, count: int) -> None:
    """Wait until at least `count` job runs are stored in `state`."""
    await wait_for_runs(poller, None, lambda runs: len(runs) >= count, state=state)


async def runs_finished(poller: JobPoller, job_id: str, count: int) -> None:
    """Wait until at least `count` runs of the job have finished."""
    await wait_for_runs(
        poller, job_id, lambda runs: sum(r.finished_at is not None for r in runs) >= count
    )


# -- stored rows -----------------------------------------------------------------------


def stored_poll(poll_id: str, **values: Any) -> dict[str, Any]:
    """Return a row of the polls table as the library stores a new pending poll (one
    second interval, function `f`, due now); `values` replace columns."""
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "id": poll_id,
        "function": "f",
        "arguments": {},
        "state": "pending",
        "attempts": 0,
        "consecutive_errors": 0,
        "interval": 1.0,
        "backoff_factor": 1.0,
        "max_interval": None,
        "jitter": 0.0,
        "timeout": None,
        "max_attempts": None,
        "max_errors": 5,
        "callbacks": [],
        "callbacks_pending": False,
        "callback_attempts": 0,
        "created_at": now,
        "deadline": None,
        "next_poll_at": now,
        "finished_at": None,
        "updated_at": now,
        "progress": None,
        "result": None,
        "error": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    row.update(values)
    return row


def change_rows(poller: JobPoller, statement: Any) -> None:
    """Change stored rows behind the API's back, as a manual edit or a downgrade would."""
    assert poller._database is not None
    with poller._database.transaction() as connection:
        connection.execute(statement)


# -- processes -------------------------------------------------------------------------

# Starting a process imports SQLAlchemy, pydantic, FastAPI and APScheduler: about a second
# here, more on a loaded machine. Generous bounds; nothing asserts speed with them.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
WORK_TIMEOUT = 60.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def report(message: str) -> None:
    """Show a measurement in the test output (`pytest -s` or `-rP`); nothing asserts on it."""
    print(message)  # noqa: T201


class WorkerProcess(Protocol):
    """A worker process a test started: its name, its process, the end of its log."""

    name: str
    process: "subprocess.Popen[str]"

    def log(self) -> str: ...


def wait_for_workers(
    condition: Callable[[], bool],
    workers: Sequence[WorkerProcess],
    what: str,
    *,
    timeout: float = WORK_TIMEOUT,
) -> None:
    """Check `condition` until it holds; fail if it does not in time or a worker dies."""
    give_up_at = time.monotonic() + timeout
    while not condition():
        for worker in workers:
            if worker.process.poll() is not None:
                returncode = worker.process.returncode
                pytest.fail(f"worker {worker.name} died ({returncode})\n{worker.log()}")
        if time.monotonic() > give_up_at:
            pytest.fail(
                f"{what}: not reached in {timeout} s\n" + "\n".join(w.log() for w in workers)
            )
        time.sleep(0.05)


# -- events (tests/events/) ------------------------------------------------------------

LOGGER = "fastapi_jobpoller"
EVENT_OF_RUN_STATE = {
    JobRunState.SUCCEEDED: EventType.JOB_EXECUTED,
    JobRunState.FAILED: EventType.JOB_ERROR,
    JobRunState.MISSED: EventType.JOB_MISSED,
    JobRunState.SKIPPED: EventType.JOB_MAX_INSTANCES,
}


class Recorder:
    """A sync listener that keeps every event it gets (it runs on a thread)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.thread_ids: set[int] = set()

    def __call__(self, event: Event) -> None:
        self.thread_ids.add(threading.get_ident())
        self.events.append(event)

    def of(self, *types: EventType) -> list[Event]:
        return [e for e in self.events if e.type in types]

    def types(self) -> Counter[EventType]:
        return Counter(e.type for e in self.events)


def build(make_poller: PollerFactory, **settings: Any) -> JobPoller:
    """A poller with the functions the event tests use."""
    poller = make_poller(callback_retry_seconds=0.05, **settings)
    calls: Counter[str] = Counter()
    deliveries: Counter[str] = Counter()

    @poller.poll_function()
    def steps(key: str, finish_after: int) -> Pending | Done:
        calls[key] += 1
        if calls[key] < finish_after:
            return Pending(progress=calls[key])
        return Done(result={"calls": calls[key]})

    @poller.poll_function()
    async def gives_up(reason: str) -> Failed:
        return Failed(reason=reason, result={"why": reason})

    @poller.poll_function()
    def raises(key: str, times: int) -> Done:
        calls[key] += 1
        if calls[key] <= times:
            raise ValueError(f"boom {calls[key]}")
        return Done(result=calls[key])

    @poller.poll_function()
    async def forever() -> Pending:
        return Pending(progress="still going")

    @poller.callback()
    def flaky(poll: PollInfo) -> None:
        deliveries[poll.id] += 1
        if deliveries[poll.id] == 1:
            raise RuntimeError(f"first delivery for {poll.id}")

    @poller.job_function()
    def noop() -> str:
        return "ok"

    @poller.job_function()
    def every_other(key: str) -> int:
        calls[key] += 1
        if calls[key] % 2 == 0:
            raise ValueError(f"even call {calls[key]}")
        return calls[key]

    @poller.job_function()
    async def slow(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return poller


def library_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER or r.name.startswith(LOGGER + ".")]


def field(record: logging.LogRecord, name: str) -> Any:
    return record.__dict__.get(name)


# -- the management API (tests/http/) --------------------------------------------------

API_KEY = "router-tests-admin-key-0001"
HEADERS = {"X-API-Key": API_KEY}
# Small limits, so that the tests can cross them cheaply.
MAX_PAGE_SIZE = 5
MAX_WAIT_SECONDS = 2.0
MAX_ARGUMENTS_BYTES = 1024
FAR_FUTURE_ISO = "2100-01-01T00:00:00Z"


@dataclass
class Service:
    """What the registered functions saw."""

    attempts: Counter[str] = dataclasses.field(default_factory=Counter)
    job_runs: "Queue[str]" = dataclasses.field(default_factory=Queue)
    finished: list[str] = dataclasses.field(default_factory=list)


@dataclass
class Api:
    client: TestClient
    poller: JobPoller
    service: Service


def build_app(database_url: str, table_prefix: str, service: Service) -> tuple[FastAPI, JobPoller]:
    poller = JobPoller(
        **{
            **FAST_SETTINGS,
            "database_url": database_url,
            "table_prefix": table_prefix,
            "api_key": API_KEY,
            "max_page_size": MAX_PAGE_SIZE,
            "max_wait_seconds": MAX_WAIT_SECONDS,
            "max_arguments_bytes": MAX_ARGUMENTS_BYTES,
        }
    )

    @poller.poll_function()
    def finish_after(ticket: str, attempts: int = 2) -> Pending | Done:
        service.attempts[ticket] += 1
        seen = service.attempts[ticket]
        if seen >= attempts:
            return Done({"ticket": ticket, "attempts": seen})
        return Pending(progress=seen)

    @poller.poll_function()
    def never_finishes(ticket: str) -> Pending:
        return Pending(progress="still waiting")

    @poller.poll_function()
    def reports_the_unstorable(kind: str) -> Pending | Done:
        values = {"nan": float("nan"), "infinity": float("inf"), "surrogate": "\ud800"}
        return Pending(progress=values[kind]) if kind == "infinity" else Done(values[kind])

    @poller.job_function()
    def record(label: str = "tick") -> str:
        service.job_runs.put(label)
        return label

    @poller.job_function()
    def cleanup() -> None:
        return None

    @poller.callback()
    def note_finished(poll: PollInfo) -> None:
        service.finished.append(poll.id)

    app = FastAPI()
    mount_scheduler(app, poller)
    return app, poller


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check an error answer's status and stable code; return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def start_poll(api: Api, **body: Any) -> dict[str, Any]:
    response = api.client.post("/jobpoller/polls", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def wait_until_ended(api: Api, poll_id: str) -> dict[str, Any]:
    response = api.client.get(
        f"/jobpoller/polls/{poll_id}/wait", params={"timeout": MAX_WAIT_SECONDS}
    )
    assert response.status_code == 200, response.text
    poll: dict[str, Any] = response.json()
    assert poll["state"] in ("succeeded", "failed", "timed_out", "cancelled"), poll
    return poll


def add_job(api: Api, **body: Any) -> dict[str, Any]:
    response = api.client.post("/jobpoller/jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
