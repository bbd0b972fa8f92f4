"""`def` functions that hang: a stuck call keeps its thread (Python cannot stop it), but
spare threads take its place up to `max_stuck_threads`, calls that wait for a thread do
not count as timed out, and `max_concurrency` bounds what one function can hold.

Thread handling is the same on every database: SQLite alone.
"""

import threading

import anyio
import pytest

from fastapi_jobpoller import Done, Event, EventType, PollState
from tests.conftest import PollerFactory
from tests.helpers import WAIT, ended, poll_until, sqlite_only, wait_thread_event

pytestmark = [pytest.mark.anyio, sqlite_only]


async def test_calls_stuck_past_their_timeout_do_not_starve_the_other_functions(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(thread_pool_size=2, max_stuck_threads=4, attempt_timeout=0.2)
    release = threading.Event()
    stuck: list[Event] = []
    poller.add_listener(stuck.append, EventType.THREAD_STUCK)

    @poller.poll_function()
    def hangs() -> Done:
        release.wait(WAIT)
        return Done()

    @poller.poll_function()
    def instant() -> Done:
        return Done(result="ran")

    try:
        async with poller:
            hanging = [await poller.start_poll("hangs", max_errors=0) for _ in range(3)]
            for poll in hanging:
                assert (await ended(poller, poll.id)).state is PollState.FAILED
            healthy = await ended(poller, (await poller.start_poll("instant")).id)
            health = await poller.health()
    finally:
        release.set()
    assert (healthy.state, healthy.result, healthy.attempts) == (PollState.SUCCEEDED, "ran", 1)
    assert health.status == "degraded"
    assert health.threads_stuck == 3
    assert any("stuck" in problem for problem in health.problems)
    assert [event.function for event in stuck] == ["hangs"] * 3


async def test_a_call_that_finds_no_free_thread_is_not_run_and_not_counted_as_an_attempt(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(thread_pool_size=1, max_stuck_threads=0, attempt_timeout=0.2)
    blocking, release = threading.Event(), threading.Event()
    queued_calls: list[int] = []

    @poller.poll_function("blocker")
    def blocker() -> Done:
        blocking.set()
        release.wait(WAIT)
        return Done()

    @poller.poll_function("queued")
    def queued() -> Done:
        queued_calls.append(1)
        return Done()

    try:
        async with poller:
            await poller.start_poll("blocker", max_errors=0)
            await wait_thread_event(blocking)  # the only thread is taken, and stays stuck
            poll = await poller.start_poll("queued", max_errors=0, interval=0.05)
            waiting = await poll_until(poller, poll.id, lambda p: p.error is not None)
            assert queued_calls == []
            health = await poller.health()
            release.set()  # the thread is free again: the poll runs, once, as a new attempt
            final = await ended(poller, poll.id)
    finally:
        release.set()
    assert waiting.state is PollState.PENDING and waiting.attempts == 0
    assert waiting.error is not None and "no thread was free" in waiting.error
    assert health.threads_stuck == 1
    assert (final.state, final.attempts, queued_calls) == (PollState.SUCCEEDED, 1, [1])


async def test_max_concurrency_holds_a_stuck_call_s_place_until_it_returns(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(thread_pool_size=2, max_stuck_threads=0, attempt_timeout=0.2)
    release = threading.Event()
    started: list[int] = []

    @poller.poll_function(max_concurrency=1)
    def hangs() -> Done:
        started.append(1)
        release.wait(WAIT)
        return Done()

    @poller.poll_function()
    def instant() -> Done:
        return Done(result="ran")

    try:
        async with poller:
            for _ in range(3):
                await poller.start_poll("hangs", max_errors=5, interval=0.05)
            healthy = await ended(poller, (await poller.start_poll("instant")).id)
            await anyio.sleep(0.5)  # many timeouts of 0.2 s: still one call of `hangs`
            assert started == [1]
    finally:
        release.set()
    assert (healthy.state, healthy.result) == (PollState.SUCCEEDED, "ran")


async def test_a_call_waiting_for_its_functions_max_concurrency_place_gives_up_uncounted(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(thread_pool_size=2, attempt_timeout=0.2)
    release = threading.Event()

    @poller.poll_function(max_concurrency=1)
    def hangs() -> Done:
        release.wait(WAIT)
        return Done()

    try:
        async with poller:
            await poller.start_poll("hangs", max_errors=0)
            waiting = await poller.start_poll("hangs", max_errors=0, interval=0.05)
            refused = await poll_until(poller, waiting.id, lambda p: p.error is not None)
    finally:
        release.set()
    assert (refused.state, refused.attempts) == (PollState.PENDING, 0)
    assert refused.error is not None and "max_concurrency" in refused.error
