"""Shutdown and restart: hanging attempts, resumed polls, waking the other processes.

Tests marked `sqlite_only` run on SQLite alone (see tests/polls/__init__.py).
"""

import threading
import time

import anyio
import pytest
import sqlalchemy as sa

from fastapi_jobpoller import Done, Event, JobPoller, Pending, PollState
from tests.conftest import PollerFactory
from tests.helpers import QUIET, WAIT, ended, poll_until, wait_thread_event

pytestmark = pytest.mark.anyio


async def test_shutdown_leaves_a_hanging_attempt_after_the_grace_period_for_the_next_poller(
    make_poller: PollerFactory,
) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def register(poller: JobPoller) -> None:
        @poller.poll_function()
        def stuck_once() -> Done:
            calls.append(len(calls) + 1)
            if len(calls) == 1:
                started.set()
                release.wait(WAIT)
                return Done(result="from the abandoned attempt")
            return Done(result="from the next poller")

    grace = 0.2
    # A lease far longer than any wait here: the next poller can only run the poll this
    # soon because shutdown hands the lease back.
    first = make_poller(lease_seconds=60.0)
    register(first)
    try:
        await first.start()
        try:
            poll = await first.start_poll("stuck_once", interval=0.01)
            await wait_thread_event(started)
        finally:
            stopping = time.monotonic()
            with anyio.fail_after(WAIT):
                await first.shutdown(grace=grace)
            stopped_after = time.monotonic() - stopping
        assert not release.is_set()
        # The hanging attempt is left behind, not waited for (the margin covers handing
        # the lease back and closing the pools, never the `WAIT` the attempt would take).
        assert stopped_after < grace + 3.0

        second = make_poller()
        register(second)
        async with second:
            final = await ended(second, poll.id)
    finally:
        release.set()
    assert final.state is PollState.SUCCEEDED
    assert final.result == "from the next poller"
    assert final.attempts == 2
    assert calls == [1, 2]


async def test_a_restart_resumes_pending_polls(make_poller: PollerFactory) -> None:
    first = make_poller()

    @first.poll_function("steps")
    def steps_before(order: int) -> Pending:
        return Pending(progress=f"order {order} waiting")

    async with first:
        polls = [await first.start_poll("steps", {"order": n}, interval=0.01) for n in range(3)]
        before = [await poll_until(first, p.id, lambda p: p.attempts >= 2) for p in polls]

    second = make_poller()

    @second.poll_function("steps")
    def steps_after(order: int) -> Done:
        return Done(result=order)

    async with second:
        finals = [await ended(second, p.id) for p in polls]
    assert [f.state for f in finals] == [PollState.SUCCEEDED] * 3
    assert [f.result for f in finals] == [0, 1, 2]
    assert [f.progress for f in finals] == [f"order {n} waiting" for n in range(3)]
    assert all(f.attempts > b.attempts for f, b in zip(finals, before, strict=True))


postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@postgresql_only
async def test_only_polls_due_before_the_next_idle_look_wake_the_other_processes(
    make_poller: PollerFactory, database_url: str, table_prefix: str
) -> None:
    """A new poll wakes the other processes (NOTIFY) only if it may come due before they
    look anyway (twice idle_wait_seconds); later ones cost the submit no notification.
    Every one of them is still announced to listeners as submitted."""
    import psycopg

    poller = make_poller(idle_wait_seconds=1.0)
    delays = [5.0, 2.0, 1.9, 0.0]
    submitted: list[str] = []
    all_submitted = threading.Event()

    def record(event: Event) -> None:  # a def listener: runs on a thread
        submitted.append(event.poll_id or "")
        if len(submitted) == len(delays):
            all_submitted.set()

    poller.add_listener(record, "poll_submitted")

    @poller.poll_function("watch")
    def watch(n: int) -> Pending:
        return Pending()

    plain_url = sa.make_url(database_url).set(drivername="postgresql")
    conninfo = plain_url.render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{table_prefix}changes"')
        async with poller:
            polls = [
                await poller.start_poll("watch", {"n": n}, delay=delay)
                for n, delay in enumerate(delays)
            ]
            payloads = []
            with anyio.move_on_after(QUIET * 2):
                async for notify in listener.notifies():
                    payloads.append(notify.payload)
            await wait_thread_event(all_submitted)
    assert payloads == ["polls", "polls"]
    assert sorted(submitted) == sorted(poll.id for poll in polls)
