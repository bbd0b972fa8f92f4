"""The daemon thread pool's hand-back of outcomes to the event loop, under real threads."""

import asyncio
import threading

import pytest

from fastapi_jobpoller._engine.thread_slots import ThreadCall
from fastapi_jobpoller._engine.threads import DaemonThreadPool

pytestmark = pytest.mark.anyio


async def test_every_outcome_of_a_burst_of_thread_calls_reaches_its_own_caller() -> None:
    """Thousands of calls finishing on many threads at once, values and errors mixed:
    each awaiting caller gets exactly its own outcome, none is lost or swapped."""
    pool = DaemonThreadPool(8, name="test-burst")
    loop = asyncio.get_running_loop()
    barrier = threading.Barrier(8)

    def work(n: int) -> int:
        if n < 8:  # the first eight wait for each other: the threads finish together
            barrier.wait(5)
        if n % 7 == 0:
            raise ValueError(n)
        return n * 2

    futures = [pool.submit_to_loop(loop, work, n) for n in range(5000)]
    outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)
    pool.shutdown()
    for n, outcome in enumerate(outcomes):
        if n % 7 == 0:
            assert isinstance(outcome, ValueError) and outcome.args == (n,)
        else:
            assert outcome == n * 2


async def test_the_loop_serves_other_callbacks_while_a_burst_of_outcomes_is_settled() -> None:
    """Outcomes are settled a slice per turn of the loop: a callback that became ready
    while a large burst was waiting runs before the last of the burst is settled."""
    pool = DaemonThreadPool(1, name="test-slices")
    loop = asyncio.get_running_loop()
    gate, finished = threading.Event(), threading.Event()
    futures = [pool.submit_to_loop(loop, gate.wait, 5) for _ in range(1000)]
    pool.submit(finished.set)  # runs after the 1000, on the same single thread
    gate.set()
    # Block the loop until every outcome is queued for it: none can be settled yet.
    assert finished.wait(5)
    seen: list[bool] = []
    loop.call_soon(lambda: seen.append(futures[-1].done()))
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    pool.shutdown()
    assert seen == [False], "the whole burst was settled before the other callback ran"


def test_a_pool_needs_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DaemonThreadPool(0, name="none")


def test_a_call_given_up_before_a_thread_took_it_never_runs() -> None:
    ran: list[int] = []
    call = ThreadCall(lambda: ran.append(1), (), {}, on_return=lambda call: None)
    assert call.mark_stuck() is False  # not started: abandoned, not stuck
    assert call() is None and ran == []
