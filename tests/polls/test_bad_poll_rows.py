"""A poll row the engine cannot use is set aside on its own, reported once, and resumes
once fixed; every other poll keeps its pace."""

import logging

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import Done, EventType, JobPoller, Pending, PollInfo, PollState
from tests.conftest import PollerFactory
from tests.helpers import Recorder, change_rows, ended, poll_until

pytestmark = pytest.mark.anyio


def register(poller: JobPoller, delivered: list[str]) -> None:
    @poller.poll_function()
    def finish(ticket: str) -> Done:
        return Done(result=ticket)

    @poller.poll_function()
    def steady(ticket: str) -> Pending:
        return Pending(progress=ticket)

    @poller.callback()
    def note(poll: PollInfo) -> None:
        delivered.append(f"{poll.id}: {poll.error}")


async def test_a_poll_with_unusable_arguments_is_parked_once_and_runs_once_fixed(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(recheck_seconds=0.2)
    delivered: list[str] = []
    register(poller, delivered)
    recorder = Recorder()
    poller.add_listener(recorder, EventType.POLL_QUARANTINED)
    async with poller:
        steady = await poller.start_poll("steady", {"ticket": "s"}, interval=0.05)
        bad = await poller.start_poll("finish", {"ticket": "b"}, delay=3600)
        polls = poller._database.tables.polls  # type: ignore[union-attr]
        change_rows(
            poller,
            sa.update(polls)
            .where(polls.c.id == bad.id)
            .values(arguments="not an object", next_poll_at=sa.func.current_timestamp()),
        )
        parked = await poll_until(poller, bad.id, lambda p: p.error is not None)
        before = (await poller.get_poll(steady.id)).attempts
        await poll_until(poller, steady.id, lambda p: p.attempts >= before + 5)
        change_rows(
            poller, sa.update(polls).where(polls.c.id == bad.id).values(arguments={"ticket": "b"})
        )
        fixed = await ended(poller, bad.id)
        listed = await poller.list_quarantined()
    assert (parked.state, parked.next_poll_at, parked.attempts) == (PollState.PENDING, None, 0)
    assert parked.error is not None and "arguments" in parked.error
    assert (fixed.state, fixed.result, fixed.attempts, fixed.problem) == (
        PollState.SUCCEEDED,
        "b",
        1,
        None,
    )
    assert [event.poll_id for event in recorder.events] == [bad.id]
    assert listed == []


async def test_an_ended_poll_whose_callbacks_are_not_a_list_is_set_aside_not_retried_forever(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    poller = make_poller(recheck_seconds=0.2, lease_seconds=1.0)
    delivered: list[str] = []
    register(poller, delivered)
    caplog.set_level(logging.WARNING, logger="fastapi_jobpoller")
    async with poller:
        poll = await poller.start_poll("finish", {"ticket": "c"}, callbacks=["note"], delay=3600)
        polls = poller._database.tables.polls  # type: ignore[union-attr]
        change_rows(
            poller,
            sa.update(polls)
            .where(polls.c.id == poll.id)
            .values(
                state="failed",
                error="gave up after 5 consecutive errors",
                callbacks="note",
                callbacks_pending=True,
                next_poll_at=sa.func.current_timestamp(),
            ),
        )
        parked = await poll_until(poller, poll.id, lambda p: p.next_poll_at is None)
        listed = await poller.list_quarantined(kind="poll")
        # Fixed in the database: the callbacks are delivered at the next re-check.
        change_rows(
            poller, sa.update(polls).where(polls.c.id == poll.id).values(callbacks=["note"])
        )
        delivered_poll = await ended(poller, poll.id)
    assert parked.state is PollState.FAILED and parked.callbacks_pending
    assert [row.id for row in listed] == [poll.id] and "callbacks" in listed[0].reason
    # Delivered with the poll's own error: releasing it did not clear it.
    assert delivered == [f"{poll.id}: gave up after 5 consecutive errors"]
    assert not delivered_poll.callbacks_pending
    assert not [r for r in caplog.records if "engine task failed" in r.getMessage()]


async def test_an_error_no_database_can_store_is_stored_cleaned_and_stalls_nothing(
    make_poller: PollerFactory,
) -> None:
    """A function's error text with a NUL (PostgreSQL refuses it), a lone surrogate (not
    UTF-8) and 100,000 characters (past MySQL's TEXT): stored cleaned and cut, in the same
    write-back batches as healthy outcomes, which keep landing."""
    poller = make_poller(attempt_history="all")
    delivered: list[str] = []
    register(poller, delivered)

    @poller.poll_function()
    def unspeakable() -> Pending:
        raise RuntimeError("nul \x00 surrogate \ud800 " + "x" * 100_000)

    async with poller:
        bad = await poller.start_poll("unspeakable", interval=0.02, max_errors=1000)
        steady = await poller.start_poll("steady", {"ticket": "s"}, interval=0.02)
        await poll_until(poller, bad.id, lambda p: p.attempts >= 5 and p.error is not None)
        before = (await poller.get_poll(steady.id)).attempts
        await poll_until(poller, steady.id, lambda p: p.attempts >= before + 5)
        stored = await poller.get_poll(bad.id)
        recorded = await poller.list_poll_attempts(poll_id=bad.id)
    assert stored.error is not None and stored.error.startswith("RuntimeError: nul ")
    assert "\x00" not in stored.error and len(stored.error) <= 4000
    assert recorded and all(a.error == stored.error for a in recorded)
