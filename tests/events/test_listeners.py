"""Listeners are the user's code: each gets the types it asked for, `async def` ones are
awaited on the event loop, and a raising or hanging one costs the engine and the other
listeners nothing."""

import asyncio
import logging
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import anyio
import pytest

from fastapi_jobpoller import Event, EventType, IntervalTrigger, JobRunState, PollState
from tests.conftest import PollerFactory
from tests.helpers import (
    LOGGER,
    QUIET,
    START_TIMEOUT,
    STOP_TIMEOUT,
    WAIT,
    Recorder,
    build,
    ended,
    eventually,
    field,
    library_records,
    runs_reach,
    sqlite_only,
)

pytestmark = pytest.mark.anyio


@sqlite_only
async def test_listeners_get_only_the_types_they_asked_for_until_removed(
    make_poller: PollerFactory,
) -> None:
    poller = build(make_poller)
    everything, ends = Recorder(), Recorder()
    poller.add_listener(everything)
    poller.add_listener(ends, EventType.POLL_SUCCEEDED, "poll_failed")
    decorated: list[Event] = []

    @poller.on(EventType.POLL_SUBMITTED)
    async def on_submit(event: Event) -> None:
        decorated.append(event)

    async with poller:
        await poller.start_poll(
            "steps", {"key": "a", "finish_after": 2}, poll_id="a", interval=0.01
        )
        await poller.start_poll("gives_up", {"reason": "no"}, poll_id="b")
        await ended(poller, "a")
        await ended(poller, "b")
        await eventually(lambda: len(ends.events) == 2, "both ends delivered")
        poller.remove_listener(ends)
        poller.remove_listener(on_submit)
        await poller.start_poll("gives_up", {"reason": "no"}, poll_id="c")
        await ended(poller, "c")

    assert sorted((e.poll_id, e.type) for e in ends.events) == [
        ("a", EventType.POLL_SUCCEEDED),
        ("b", EventType.POLL_FAILED),
    ]
    assert [e.poll_id for e in decorated] == ["a", "b"]
    assert {e.poll_id for e in everything.of(EventType.POLL_FAILED)} == {"b", "c"}


@sqlite_only
async def test_an_async_listener_is_awaited_on_the_event_loop(make_poller: PollerFactory) -> None:
    poller = build(make_poller)
    loop_thread = threading.get_ident()
    gate = asyncio.Event()
    entered, finished = asyncio.Event(), asyncio.Event()
    seen: list[tuple[str, int]] = []
    sync_recorder = Recorder()

    async def listener(event: Event) -> None:
        seen.append(("entered", threading.get_ident()))
        entered.set()
        await gate.wait()  # only an awaited coroutine gets past this
        seen.append(("finished", threading.get_ident()))
        finished.set()

    poller.add_listener(listener, EventType.POLL_SUCCEEDED)
    poller.add_listener(sync_recorder, EventType.POLL_SUCCEEDED)
    async with poller:
        await poller.start_poll("steps", {"key": "a", "finish_after": 1}, poll_id="a")
        with anyio.fail_after(WAIT):
            await entered.wait()
        await anyio.sleep(QUIET)
        assert not finished.is_set()
        gate.set()
        with anyio.fail_after(WAIT):
            await finished.wait()

    assert seen == [("entered", loop_thread), ("finished", loop_thread)]
    assert len(sync_recorder.events) == 1
    assert loop_thread not in sync_recorder.thread_ids, "a def listener ran on the event loop"


class AsyncCallable:
    """A listener object whose `__call__` is a coroutine function."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        await asyncio.sleep(0)
        self.events.append(event)


@sqlite_only
async def test_an_object_with_an_async_call_method_is_awaited_too(
    make_poller: PollerFactory,
) -> None:
    poller, listener = build(make_poller), AsyncCallable()
    poller.add_listener(listener, EventType.POLL_SUCCEEDED)
    async with poller:
        await poller.start_poll("steps", {"key": "a", "finish_after": 1}, poll_id="a")
        await ended(poller, "a")
        await eventually(lambda: len(listener.events) == 1, "the listener was never awaited")

    assert [e.poll_id for e in listener.events] == ["a"]


@sqlite_only
async def test_a_raising_listener_is_logged_while_the_engine_and_other_listeners_carry_on(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    poller, recorder = build(make_poller), Recorder()
    raised: list[EventType] = []

    def raising(event: Event) -> None:
        raised.append(event.type)
        raise RuntimeError("listener bug")

    async def raising_async(event: Event) -> None:
        raise LookupError("async listener bug")

    poller.add_listener(raising)
    poller.add_listener(raising_async, EventType.POLL_SUCCEEDED)
    poller.add_listener(recorder)
    async with poller:
        await poller.start_poll(
            "steps", {"key": "a", "finish_after": 3}, poll_id="a", interval=0.01
        )
        assert (await ended(poller, "a")).state is PollState.SUCCEEDED

    expected = Counter(
        {
            EventType.SCHEDULER_STARTED: 1,
            EventType.POLL_SUBMITTED: 1,
            EventType.POLL_ATTEMPT_STARTED: 3,
            EventType.POLL_PENDING: 2,
            EventType.POLL_SUCCEEDED: 1,
            EventType.SCHEDULER_STOPPED: 1,
        }
    )
    assert recorder.types() == expected
    assert Counter(raised) == expected
    failures = [r for r in library_records(caplog) if field(r, "event") == "listener_failed"]
    assert len(failures) == expected.total() + 1
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)
    async_failures = [r for r in failures if "async listener bug" in str(r.exc_info[1])]  # type: ignore[index]
    assert [field(r, "listener_event") for r in async_failures] == ["poll_succeeded"]


@sqlite_only
async def test_hanging_listeners_stall_neither_the_engine_nor_the_other_listeners(
    make_poller: PollerFactory,
) -> None:
    poller = build(make_poller)
    sync_recorder, async_events = Recorder(), []
    release_threads, release_tasks = threading.Event(), asyncio.Event()
    hung: Counter[str] = Counter()

    def hang_a(event: Event) -> None:
        hung["a"] += 1
        release_threads.wait(WAIT * 3)

    def hang_b(event: Event) -> None:
        hung["b"] += 1
        release_threads.wait(WAIT * 3)

    async def hang_async(event: Event) -> None:
        hung["async"] += 1
        await release_tasks.wait()

    async def record_async(event: Event) -> None:
        async_events.append(event)

    for listener in (hang_a, hang_b, hang_async, sync_recorder, record_async):
        poller.add_listener(listener)
    try:
        async with poller:
            await poller.start_poll(
                "steps", {"key": "a", "finish_after": 3}, poll_id="a", interval=0.01
            )
            await poller.add_job("noop", IntervalTrigger(seconds=0.05), job_id="j")
            assert (await ended(poller, "a")).state is PollState.SUCCEEDED
            await runs_reach(poller, JobRunState.SUCCEEDED, 3)
            await eventually(
                lambda: (
                    len(sync_recorder.of(EventType.POLL_SUCCEEDED, EventType.JOB_EXECUTED)) >= 4
                ),
                "a def listener beside the hanging ones got the events",
            )
            await eventually(
                lambda: any(e.type is EventType.POLL_SUCCEEDED for e in async_events),
                "an async listener beside the hanging ones got the events",
            )
            assert hung == {"a": 1, "b": 1, "async": 1}, (
                "each hanging listener holds its first event"
            )
            with anyio.fail_after(WAIT):  # shutdown gives up on them after its grace period
                await poller.shutdown()
    finally:
        release_threads.set()
        release_tasks.set()

    assert sync_recorder.types()[EventType.POLL_ATTEMPT_STARTED] == 3
    assert sync_recorder.types()[EventType.SCHEDULER_STOPPED] == 1


HANGING_LISTENER_PROGRAM = """
import asyncio, sys, threading
from fastapi_jobpoller import EventType, JobPoller

async def main() -> None:
    poller = JobPoller(database_url=sys.argv[1], idle_wait_seconds=0.05)
    entered = threading.Event()

    def hang(event):
        entered.set()
        threading.Event().wait()  # forever

    poller.add_listener(hang, EventType.SCHEDULER_STARTED)
    async with poller:
        while not entered.is_set():
            await asyncio.sleep(0.01)
    print("SHUT DOWN", flush=True)

asyncio.run(main())
"""


@pytest.mark.processes
def test_a_process_whose_def_listener_hangs_still_exits_after_shutdown(tmp_path: Path) -> None:
    program = subprocess.run(
        [sys.executable, "-c", HANGING_LISTENER_PROGRAM, f"sqlite:///{tmp_path}/jobpoller.db"],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT + START_TIMEOUT,
    )
    assert (program.returncode, program.stdout) == (0, "SHUT DOWN\n"), program.stderr
