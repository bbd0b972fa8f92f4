"""Managing polls, on every database: submitting one again, cancelling, listing.

Tests marked `sqlite_only` run on SQLite alone (see tests/polls/__init__.py).
"""

import asyncio

import anyio
import pytest

from fastapi_jobpoller import (
    Done,
    InvalidArgumentsError,
    InvalidStateError,
    Pending,
    PollConflictError,
    PollInfo,
    PollNotFoundError,
    PollState,
)
from tests.conftest import PollerFactory
from tests.helpers import QUIET, ended, poll_until, wait_event

pytestmark = pytest.mark.anyio


# -- submitting the same poll again ----------------------------------------------------


async def test_submitting_the_same_id_and_arguments_again_returns_the_stored_poll(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def check(order: int) -> Done:
        return Done()

    async with poller:
        first, created_first = await poller.submit_poll(
            "check", {"order": 7}, poll_id="req-1", delay=60
        )
        # The same arguments in another but equivalent form, and other options.
        again, created_again = await poller.submit_poll(
            "check", {"order": "7"}, poll_id="req-1", delay=1, interval=3
        )
        plain = await poller.start_poll("check", {"order": 7}, poll_id="req-1")
        listed = await poller.list_polls()
    assert created_first is True
    assert created_again is False
    assert again.id == plain.id == "req-1"
    assert again.created_at == first.created_at == plain.created_at
    assert again.next_poll_at == first.next_poll_at
    assert again.interval == first.interval
    assert [p.id for p in listed] == ["req-1"]


async def test_submitting_an_ended_poll_again_returns_it_without_running_it_again(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def once(order: int) -> Done:
        nonlocal calls
        calls += 1
        return Done(result=order)

    async with poller:
        poll = await poller.start_poll("once", {"order": 1}, poll_id="req-2", interval=0.01)
        final = await ended(poller, poll.id)
        again, created = await poller.submit_poll("once", {"order": 1}, poll_id="req-2")
        await anyio.sleep(QUIET)
        later = await poller.get_poll("req-2")
    assert final.state is PollState.SUCCEEDED
    assert created is False
    assert again.state is PollState.SUCCEEDED
    assert again.result == 1
    assert later.attempts == 1
    assert calls == 1


async def test_the_same_id_with_other_arguments_or_another_function_is_a_conflict(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def check(order: int) -> Done:
        return Done()

    @poller.poll_function()
    def other(order: int) -> Done:
        return Done()

    async with poller:
        await poller.start_poll("check", {"order": 1}, poll_id="req-3", delay=60)
        with pytest.raises(PollConflictError) as raised:
            await poller.start_poll("check", {"order": 2}, poll_id="req-3")
        with pytest.raises(PollConflictError):
            await poller.start_poll("other", {"order": 1}, poll_id="req-3")
        stored = await poller.get_poll("req-3")
    assert raised.value.code == "poll_conflict"
    assert stored.function == "check"
    assert stored.arguments == {"order": 1}


# -- cancelling --------------------------------------------------------------------------


async def test_a_cancelled_poll_runs_no_more_attempts(make_poller: PollerFactory) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def slow_steps() -> Pending:
        nonlocal calls
        calls += 1
        # Come back soon: without the cancel, a second attempt would run within QUIET.
        return Pending(progress=calls, retry_after=0.1)

    async with poller:
        poll = await poller.start_poll("slow_steps", interval=0.01)
        await poll_until(
            poller, poll.id, lambda p: p.state is PollState.PENDING and p.attempts == 1
        )
        cancelled = await poller.cancel_poll(poll.id)
        await anyio.sleep(QUIET)
        later = await poller.get_poll(poll.id)
    assert cancelled.state is PollState.CANCELLED
    assert cancelled.error == "cancelled"
    assert cancelled.finished_at is not None
    assert cancelled.next_poll_at is None
    # Normally 1; 2 only if a slow database let the next attempt start before the cancel
    # landed (that attempt's outcome is then dropped). Either way: nothing after it.
    assert cancelled.attempts in (1, 2)
    assert later.state is PollState.CANCELLED
    assert later.attempts == cancelled.attempts
    assert later.progress == cancelled.progress
    assert calls == cancelled.attempts


async def test_a_poll_cancelled_before_its_first_attempt_never_runs(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def never() -> Done:
        nonlocal calls
        calls += 1
        return Done()

    delay = 0.3
    async with poller:
        poll = await poller.start_poll("never", delay=delay)
        cancelled = await poller.cancel_poll(poll.id)
        # Past the time the first attempt was due.
        await anyio.sleep(delay + QUIET)
        later = await poller.get_poll(poll.id)
    assert cancelled.attempts == 0
    assert later.state is PollState.CANCELLED
    assert later.attempts == 0
    assert calls == 0


# A late Done is refused by the terminal write, a late Pending by the pending write.
@pytest.mark.parametrize("outcome", ["done", "pending"])
async def test_cancelling_during_an_attempt_discards_the_attempts_outcome(
    make_poller: PollerFactory, outcome: str
) -> None:
    poller = make_poller()
    started = asyncio.Event()
    release = asyncio.Event()
    returned = asyncio.Event()
    calls = 0
    callbacks: list[PollState] = []

    @poller.poll_function()
    async def in_flight() -> Pending | Done:
        nonlocal calls
        calls += 1
        started.set()
        try:
            await release.wait()
            return Pending(progress="late progress") if outcome == "pending" else Done("late")
        finally:
            returned.set()

    @poller.callback()
    def notify(poll: PollInfo) -> None:
        callbacks.append(poll.state)

    async with poller:
        poll = await poller.start_poll(
            "in_flight", interval=0.01, max_errors=0, callbacks=("notify",)
        )
        await wait_event(started)
        cancelled = await poller.cancel_poll(poll.id)
        release.set()
        await wait_event(returned)
        await anyio.sleep(QUIET)
        final = await ended(poller, poll.id)
    assert cancelled.state is PollState.CANCELLED
    assert final.state is PollState.CANCELLED
    assert final.error == "cancelled"
    assert final.result is None
    assert final.progress is None
    assert final.attempts == 1
    assert calls == 1
    assert callbacks == [PollState.CANCELLED]


async def test_cancelling_a_poll_that_has_ended_is_an_invalid_state(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def finish() -> Done:
        return Done(result="kept")

    async with poller:
        poll = await poller.start_poll("finish", interval=0.01)
        await ended(poller, poll.id)
        with pytest.raises(InvalidStateError) as raised:
            await poller.cancel_poll(poll.id)
        after = await poller.get_poll(poll.id)
    assert raised.value.code == "invalid_state"
    assert after.state is PollState.SUCCEEDED
    assert after.result == "kept"


async def test_an_unknown_poll_id_is_not_found(make_poller: PollerFactory) -> None:
    async with make_poller() as poller:
        with pytest.raises(PollNotFoundError) as raised:
            await poller.get_poll("no-such-poll")
        with pytest.raises(PollNotFoundError):
            await poller.cancel_poll("no-such-poll")
        with pytest.raises(PollNotFoundError):
            await poller.wait_for_poll("no-such-poll", timeout=1)
    assert raised.value.code == "poll_not_found"


# -- listing -----------------------------------------------------------------------------


async def test_list_polls_filters_by_state_and_function(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.poll_function()
    def finisher() -> Done:
        return Done()

    @poller.poll_function()
    def waiter() -> Done:
        return Done()

    async with poller:
        done = [(await poller.start_poll("finisher", interval=0.01)).id for _ in range(2)]
        waiting = (await poller.start_poll("waiter", delay=60)).id
        cancelled = (await poller.start_poll("waiter", delay=60)).id
        await poller.cancel_poll(cancelled)
        for poll_id in done:
            await ended(poller, poll_id)

        async def ids(**filters: object) -> set[str]:
            return {p.id for p in await poller.list_polls(**filters)}  # type: ignore[arg-type]

        assert await ids() == {*done, waiting, cancelled}
        assert await ids(state=PollState.SUCCEEDED) == set(done)
        assert await ids(state=PollState.PENDING) == {waiting}
        assert await ids(state=[PollState.PENDING, PollState.CANCELLED]) == {waiting, cancelled}
        assert await ids(function="waiter") == {waiting, cancelled}
        assert await ids(function="finisher", state=PollState.SUCCEEDED) == set(done)
        assert await ids(function="finisher", state=PollState.CANCELLED) == set()
        assert await ids(function="nothing") == set()


async def test_list_polls_pages_through_polls_newest_first(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.poll_function()
    def idle() -> Done:
        return Done()

    async with poller:
        created = [(await poller.start_poll("idle", delay=60)).id for _ in range(5)]
        everything = [p.id for p in await poller.list_polls()]
        pages = [
            [p.id for p in await poller.list_polls(limit=2, offset=offset)]
            for offset in (0, 2, 4, 6)
        ]
        with pytest.raises(InvalidArgumentsError):
            await poller.list_polls(limit=0)
        with pytest.raises(InvalidArgumentsError):
            await poller.list_polls(offset=-1)
    assert everything == created[::-1]
    assert pages == [everything[0:2], everything[2:4], everything[4:5], []]
