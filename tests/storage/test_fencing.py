"""Fenced writes leave no trace: an outcome written after its lease was lost changes
nothing, and no attempt-history row claims it happened."""

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import JobPoller, Pending
from fastapi_jobpoller._storage.attempt_store import AttemptStore
from fastapi_jobpoller._storage.tables import utcnow
from tests.conftest import PollerFactory

pytestmark = pytest.mark.anyio


def pending_update(row: dict[str, Any], *, note: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the write-back of an attempt of the claimed `row`, and its history row."""
    now = utcnow()
    update = {
        "id": row["id"],
        "attempts": row["attempts"],
        "new_attempts": row["attempts"],
        "consecutive_errors": 0,
        "next_poll_at": now + timedelta(hours=5),
        "progress": {"by": note},
        "error": None,
        "updated_at": now,
    }
    history = {
        "id": f"{note}-{row['id']}-{row['attempts']}",
        "poll_id": row["id"],
        "function": row["function"],
        "attempt": row["attempts"],
        "worker": note,
        "started_at": now,
        "finished_at": now,
        "outcome": "pending",
        "progress": {"by": note},
        "error": None,
        "traceback": None,
    }
    return update, history


def attempts_recorded(poller: JobPoller, poll_id: str) -> list[tuple[int, str]]:
    table = poller._database.tables.poll_attempts  # type: ignore[union-attr]
    with poller._database.transaction() as connection:  # type: ignore[union-attr]
        rows = connection.execute(
            sa.select(table.c.attempt, table.c.worker)
            .where(table.c.poll_id == poll_id)
            .order_by(table.c.attempt)
        )
        return [(row.attempt, row.worker) for row in rows]


async def test_a_write_fenced_off_by_a_takeover_records_no_attempt(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(attempt_history="all")

    @poller.poll_function()
    def watched() -> Pending:
        return Pending()

    async with poller:
        # Due in an hour: the running engine leaves it to the two "workers" below.
        poll = await poller.start_poll("watched", delay=3600)
        assert poller._database is not None
        store = AttemptStore(poller._database)
        later = utcnow() + timedelta(hours=2)
        (first,) = store.claim(
            worker="a", now=later, lease_until=later + timedelta(seconds=1), limit=1
        ).attempts
        # Worker a stalls past its lease; worker b takes the poll over.
        takeover = later + timedelta(seconds=2)
        (second,) = store.claim(
            worker="b", now=takeover, lease_until=takeover + timedelta(hours=1), limit=1
        ).attempts
        assert (first["attempts"], second["attempts"]) == (1, 2)

        late_update, late_history = pending_update(first, note="a")
        store.write_pending([late_update], worker="a", history=[late_history])
        assert attempts_recorded(poller, poll.id) == []

        update, history = pending_update(second, note="b")
        store.write_pending([update], worker="b", history=[history])
        stored = await poller.get_poll(poll.id)
        assert (stored.attempts, stored.progress) == (2, {"by": "b"})
        assert attempts_recorded(poller, poll.id) == [(2, "b")]


async def test_in_a_batch_only_the_writes_that_landed_are_recorded(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(attempt_history="all")

    @poller.poll_function()
    def watched() -> Pending:
        return Pending()

    async with poller:
        polls = [await poller.start_poll("watched", delay=3600) for _ in range(4)]
        assert poller._database is not None
        store = AttemptStore(poller._database)
        later = utcnow() + timedelta(hours=2)
        claimed = store.claim(
            worker="a", now=later, lease_until=later + timedelta(seconds=1), limit=4
        ).attempts
        # Two of the four are cancelled while worker a's outcomes wait in its buffer.
        cancelled = {polls[0].id, polls[2].id}
        for poll_id in cancelled:
            await poller.cancel_poll(poll_id)
        written = [pending_update(row, note="a") for row in claimed]
        store.write_pending([u for u, _ in written], worker="a", history=[h for _, h in written])
        for poll in polls:
            expected = [] if poll.id in cancelled else [(1, "a")]
            assert attempts_recorded(poller, poll.id) == expected, poll.id
