"""Where and how attempts run: functions this process does not register, concurrency
limits, the process executor, attempt timeouts.

Tests marked `sqlite_only` run on SQLite alone (see tests/polls/__init__.py).
"""

import asyncio
import os
import threading
import time

import anyio
import pytest

from fastapi_jobpoller import Done, JobPoller, PollState
from tests.conftest import PollerFactory
from tests.helpers import QUIET, WAIT, ended, poll_until, sqlite_only
from tests.support import process_functions

pytestmark = pytest.mark.anyio


# -- functions this process does not register ------------------------------------------


async def test_a_poll_of_an_unregistered_function_waits_for_a_process_that_registers_it(
    make_poller: PollerFactory,
) -> None:
    calls = 0

    def register(poller: JobPoller) -> None:
        @poller.poll_function()
        def added_later() -> Done:
            nonlocal calls
            calls += 1
            return Done(result="ran")

    submitter = make_poller()
    register(submitter)
    async with submitter:
        poll = await submitter.start_poll("added_later", interval=0.01, delay=0.5)

    # An older deploy: it does not know the function.
    older = make_poller(unknown_function_retry_seconds=0.05)
    async with older:
        seen = await poll_until(older, poll.id, lambda p: p.error is not None)
        await anyio.sleep(QUIET)  # several more looks at it
        still = await older.get_poll(poll.id)
        listed = [p.id for p in await older.list_polls()]
    # Pending, or running while the older process looks at it again.
    assert not seen.is_terminal
    assert seen.error is not None
    assert "'added_later' is not registered" in seen.error
    assert not still.is_terminal
    assert listed == [poll.id]
    assert calls == 0

    newer = make_poller()
    register(newer)
    async with newer:
        final = await ended(newer, poll.id)
    assert final.state is PollState.SUCCEEDED
    assert final.result == "ran"
    assert calls == 1


# -- limits and executors ----------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("function_kind", ["sync", "async"])
async def test_max_concurrency_limits_concurrent_attempts_of_a_function(
    make_poller: PollerFactory, function_kind: str
) -> None:
    poller = make_poller()
    lock = threading.Lock()
    running = 0
    peak = 0

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    if function_kind == "sync":

        @poller.poll_function("limited", max_concurrency=2)
        def limited_sync() -> Done:
            enter()
            try:
                time.sleep(0.2)
            finally:
                leave()
            return Done()

    else:

        @poller.poll_function("limited", max_concurrency=2)
        async def limited_async() -> Done:
            enter()
            try:
                await asyncio.sleep(0.2)
            finally:
                leave()
            return Done()

    async with poller:
        polls = [await poller.start_poll("limited", interval=0.01) for _ in range(6)]
        finals = [await ended(poller, poll.id) for poll in polls]
    assert all(final.state is PollState.SUCCEEDED for final in finals)
    assert peak == 2


@sqlite_only
@pytest.mark.processes
async def test_a_process_executor_runs_the_function_in_another_process(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(process_pool_size=1)
    poller.poll_function(executor="process")(process_functions.report_pid)
    async with poller:
        poll = await poller.start_poll("report_pid", {"label": "child"}, interval=0.01)
        final = await poller.wait_for_poll(poll.id, timeout=60)
    assert final.state is PollState.SUCCEEDED, final.error
    assert final.result["label"] == "child"
    assert isinstance(final.result["pid"], int)
    assert final.result["pid"] != os.getpid()


@sqlite_only
@pytest.mark.parametrize("function_kind", ["sync", "async"])
async def test_an_attempt_running_past_the_attempt_timeout_is_an_error(
    make_poller: PollerFactory, function_kind: str
) -> None:
    poller = make_poller(attempt_timeout=0.2)
    release = threading.Event()

    if function_kind == "sync":

        @poller.poll_function("hangs")
        def hangs_sync() -> Done:
            release.wait(WAIT)
            return Done()

    else:

        @poller.poll_function("hangs")
        async def hangs_async() -> Done:
            await asyncio.sleep(WAIT)
            return Done()

    try:
        async with poller:
            poll = await poller.start_poll("hangs", interval=0.01, max_errors=0)
            final = await ended(poller, poll.id)
    finally:
        release.set()
    assert final.state is PollState.FAILED
    assert final.error == "gave up after 1 consecutive errors; last: attempt timed out after 0.2 s"
