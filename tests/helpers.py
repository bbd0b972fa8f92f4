"""Waits and small helpers shared by the test modules, so that none of them keeps a copy.

Fixtures live in the conftest.py files (tests/conftest.py for every test, and one per
folder); what a test calls or imports by name lives here. Every wait gives up after a
bounded time, so a bug fails a test and never hangs it.
"""

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
import pytest

from fastapi_jobpoller import DateTrigger, JobPoller, JobRunInfo, JobRunState, PollInfo

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
