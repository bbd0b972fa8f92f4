"""Engine events: each occurrence fires once, is logged, and reaches every listener.

Listeners are the user's code: a raising or hanging one must cost the engine nothing,
and `async def` ones are awaited. The last test runs two real processes on one
PostgreSQL database (`tests/support/event_worker.py`), each writing its events to a ledger
table, and checks that every occurrence was reported once, by one process.
"""

import asyncio
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
import sqlalchemy as sa

from fastapi_jobpoller import (
    Done,
    Event,
    EventType,
    Failed,
    IntervalTrigger,
    JobPoller,
    JobRunState,
    Pending,
    PollInfo,
    PollState,
)
from fastapi_jobpoller._storage.database import Database
from fastapi_jobpoller._storage.tables import Tables
from tests.conftest import PollerFactory
from tests.helpers import (
    FAR_FUTURE,
    QUIET,
    REPOSITORY,
    START_TIMEOUT,
    STOP_TIMEOUT,
    WAIT,
    WORK_TIMEOUT,
    ended,
    eventually,
    runs_reach,
    sqlite_only,
    wait_for_workers,
)
from tests.support.event_worker import events_table
from tests.support.process_worker import ledger_table

pytestmark = pytest.mark.anyio


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
    """A poller with the functions these tests use."""
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


def by_subject(events: Iterable[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.poll_id or event.run_id or event.job_id or ""].append(event)
    return grouped


# -- polls ---------------------------------------------------------------------------------


async def test_each_poll_event_fires_once_per_occurrence_with_what_a_listener_needs(
    make_poller: PollerFactory,
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    async with poller:
        polls = [
            await poller.start_poll(
                "steps",
                {"key": f"p{n}", "finish_after": 3},
                poll_id=f"p{n}",
                interval=0.01,
                callbacks=["flaky"],
            )
            for n in range(3)
        ]
        for poll in polls:
            assert (await ended(poller, poll.id)).state is PollState.SUCCEEDED

    grouped = by_subject(recorder.of(*POLL_TYPES))
    assert set(grouped) == {"p0", "p1", "p2"}
    for poll_id, events in grouped.items():
        kinds = Counter(e.type for e in events)
        assert kinds == {
            EventType.POLL_SUBMITTED: 1,
            EventType.POLL_ATTEMPT_STARTED: 3,
            EventType.POLL_PENDING: 2,
            EventType.POLL_SUCCEEDED: 1,
            EventType.POLL_CALLBACK_FAILED: 1,
        }, poll_id
        assert {e.function for e in events} == {"steps"}
        assert {e.worker_id for e in events} == {poller.worker_id}
        started = [e for e in events if e.type is EventType.POLL_ATTEMPT_STARTED]
        assert [e.attempt for e in started] == [1, 2, 3]
        for event in started:
            assert event.started_at is not None and event.scheduled_at is not None
        pending = [e for e in events if e.type is EventType.POLL_PENDING]
        assert [(e.attempt, e.progress, e.outcome) for e in pending] == [
            (1, 1, "pending"),
            (2, 2, "pending"),
        ]
        assert all(e.duration is not None and e.duration >= 0 for e in pending)
        (succeeded,) = (e for e in events if e.type is EventType.POLL_SUCCEEDED)
        assert succeeded.attempt == 3
        assert succeeded.outcome == "succeeded"
        assert succeeded.result == {"calls": 3}
        assert succeeded.duration is not None
        (callback_failed,) = (e for e in events if e.type is EventType.POLL_CALLBACK_FAILED)
        assert callback_failed.details["callback"] == "flaky"
        assert callback_failed.details["delivery"] == 1
        assert callback_failed.details["gave_up"] is False
        assert callback_failed.error == f"RuntimeError: first delivery for {poll_id}"
        assert callback_failed.traceback is not None
        assert "RuntimeError" in callback_failed.traceback
        assert callback_failed.outcome == "succeeded"


POLL_TYPES = tuple(t for t in EventType if t.value.startswith("poll_"))
POLL_ENDS = (
    EventType.POLL_SUCCEEDED,
    EventType.POLL_FAILED,
    EventType.POLL_TIMED_OUT,
    EventType.POLL_CANCELLED,
)


async def test_a_failed_a_timed_out_and_a_cancelled_poll_each_fire_one_end_event(
    make_poller: PollerFactory,
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    async with poller:
        await poller.start_poll("gives_up", {"reason": "no such order"}, poll_id="failed")
        await poller.start_poll(
            "raises", {"key": "errors", "times": 5}, poll_id="errors", interval=0.01, max_errors=1
        )
        await poller.start_poll("forever", poll_id="late", interval=0.02, timeout=0.2)
        await poller.start_poll("forever", poll_id="cancelled", interval=60)
        await eventually(
            lambda: any(e.poll_id == "cancelled" for e in recorder.of(EventType.POLL_PENDING)),
            "the poll to cancel never made its first attempt",
        )
        await poller.cancel_poll("cancelled")
        for poll_id in ("failed", "errors", "late", "cancelled"):
            await ended(poller, poll_id)
        await anyio.sleep(QUIET)

    ends = Counter((e.poll_id, e.type) for e in recorder.of(*POLL_ENDS))
    assert ends == {
        ("failed", EventType.POLL_FAILED): 1,
        ("errors", EventType.POLL_FAILED): 1,
        ("late", EventType.POLL_TIMED_OUT): 1,
        ("cancelled", EventType.POLL_CANCELLED): 1,
    }
    grouped = by_subject(recorder.events)
    (failed,) = [e for e in grouped["failed"] if e.type is EventType.POLL_FAILED]
    assert (failed.error, failed.result, failed.attempt) == (
        "no such order",
        {"why": "no such order"},
        1,
    )
    errors = [
        e for e in grouped["errors"] if e.type in (EventType.POLL_PENDING, EventType.POLL_FAILED)
    ]
    assert [(e.type, e.attempt, e.outcome) for e in errors] == [
        (EventType.POLL_PENDING, 1, "error"),
        (EventType.POLL_FAILED, 2, "error"),
    ]
    assert errors[0].error == "ValueError: boom 1"
    assert errors[0].traceback is not None and "ValueError: boom 1" in errors[0].traceback
    assert errors[1].error is not None and "ValueError: boom 2" in errors[1].error
    (late,) = [e for e in grouped["late"] if e.type is EventType.POLL_TIMED_OUT]
    assert late.outcome == "timed_out" and late.error == "timed out after 0.2 s"
    (cancelled,) = [e for e in grouped["cancelled"] if e.type is EventType.POLL_CANCELLED]
    assert (cancelled.function, cancelled.outcome) == ("forever", "cancelled")
    # The cancelled poll's one attempt ran before the cancel, and none after it.
    assert Counter(e.type for e in grouped["cancelled"])[EventType.POLL_ATTEMPT_STARTED] == 1


# -- jobs ----------------------------------------------------------------------------------


async def test_job_definition_events_fire_once_per_change(make_poller: PollerFactory) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    async with poller:
        await poller.add_job("noop", FAR_FUTURE, job_id="j")
        await poller.modify_job("j", max_instances=2)
        await poller.pause_job("j")
        await poller.resume_job("j")
        await poller.reschedule_job("j", IntervalTrigger(hours=1))
        await poller.remove_job("j")

    changes = [
        (e.type, e.job_id, e.function) for e in recorder.events if e.type.value.startswith("job_")
    ]
    assert changes == [
        (EventType.JOB_ADDED, "j", "noop"),
        (EventType.JOB_MODIFIED, "j", "noop"),
        (EventType.JOB_PAUSED, "j", "noop"),
        (EventType.JOB_RESUMED, "j", "noop"),
        (EventType.JOB_MODIFIED, "j", "noop"),
        (EventType.JOB_REMOVED, "j", None),
    ]


EVENT_OF_RUN_STATE = {
    JobRunState.SUCCEEDED: EventType.JOB_EXECUTED,
    JobRunState.FAILED: EventType.JOB_ERROR,
    JobRunState.MISSED: EventType.JOB_MISSED,
    JobRunState.SKIPPED: EventType.JOB_MAX_INSTANCES,
}


async def test_each_job_run_fires_one_outcome_event_that_matches_its_stored_record(
    make_poller: PollerFactory,
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    every = IntervalTrigger(seconds=0.05)
    async with poller:
        await poller.add_job("every_other", every, arguments={"key": "e"}, job_id="flaky")
        await poller.add_job("noop", every, job_id="late", misfire_grace_time=0)
        await poller.add_job("slow", every, arguments={"seconds": 0.3}, job_id="busy")

        async def stored_states() -> Counter[JobRunState]:
            return Counter(r.state for r in await poller.list_job_runs(limit=1000))

        with anyio.fail_after(WAIT):
            while True:
                states = await stored_states()
                if all(states[s] >= 2 for s in EVENT_OF_RUN_STATE):
                    break
                await anyio.sleep(0.05)
        for job_id in ("flaky", "late", "busy"):
            await poller.pause_job(job_id)
        with anyio.fail_after(WAIT):
            while True:
                if not (await stored_states())[JobRunState.RUNNING]:
                    break
                await anyio.sleep(0.05)
        runs = {run.id: run for run in await poller.list_job_runs(limit=1000)}

    outcomes = recorder.of(*EVENT_OF_RUN_STATE.values())
    assert Counter(e.run_id for e in outcomes) == dict.fromkeys(runs, 1)
    for event in outcomes:
        run = runs[event.run_id or ""]
        assert event.type is EVENT_OF_RUN_STATE[run.state], run
        assert (event.job_id, event.function, event.scheduled_at, event.attempt) == (
            run.job_id,
            run.function,
            run.scheduled_at,
            run.attempt,
        )
        assert event.outcome == run.state.value
        if run.state in (JobRunState.SUCCEEDED, JobRunState.FAILED):
            assert event.started_at == run.started_at
            assert event.duration is not None and event.duration >= 0
            assert (event.result, event.error, event.traceback) == (
                run.result,
                run.error,
                run.traceback,
            )
        else:
            assert event.error == run.error
    submitted = recorder.of(EventType.JOB_SUBMITTED)
    executed = {
        run_id
        for run_id, run in runs.items()
        if run.state in (JobRunState.SUCCEEDED, JobRunState.FAILED)
    }
    assert Counter(e.run_id for e in submitted) == dict.fromkeys(executed, 1)
    failed = [e for e in outcomes if e.type is EventType.JOB_ERROR]
    assert all(e.error and e.error.startswith("ValueError: even call") for e in failed)
    assert all(e.traceback and "ValueError" in e.traceback for e in failed)


async def test_a_run_given_up_after_its_workers_were_lost_fires_one_job_error(
    make_poller: PollerFactory, database_url: str, table_prefix: str
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    async with poller:
        await poller.add_job("noop", FAR_FUTURE, job_id="j")
        # A run whose third worker died holding it: its lease has expired.
        database = Database(database_url, table_prefix=table_prefix)
        runs = database.tables.job_runs
        now = datetime.now(UTC)
        lost = {
            "id": "lost-run",
            "job_id": "j",
            "function": "noop",
            "arguments": {},
            "scheduled_at": now - timedelta(seconds=60),
            "state": "running",
            "attempt": 3,
            "due_at": now - timedelta(seconds=1),
            "worker": "a-dead-process",
            "started_at": now - timedelta(seconds=40),
        }
        try:
            with database.transaction() as connection:
                connection.execute(sa.insert(runs).values(**lost))
            await eventually(
                lambda: bool(recorder.of(EventType.JOB_ERROR)), "the given-up run was reported"
            )
            run = await poller.get_job_run("lost-run")
            await anyio.sleep(QUIET)
        finally:
            database.dispose()

    assert run.state is JobRunState.FAILED
    (error,) = recorder.of(EventType.JOB_ERROR)
    assert (error.run_id, error.job_id, error.function) == ("lost-run", "j", "noop")
    assert error.attempt == 3
    assert (error.outcome, error.error) == ("failed", run.error)
    assert run.error is not None and "worker lost 3 times" in run.error
    assert recorder.of(EventType.JOB_SUBMITTED, EventType.JOB_EXECUTED) == []


@sqlite_only
async def test_scheduler_started_and_stopped_fire_once_per_start_and_stop(
    make_poller: PollerFactory,
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder, EventType.SCHEDULER_STARTED, EventType.SCHEDULER_STOPPED)
    for _ in range(2):
        async with poller:
            await poller.start()  # starting twice does nothing
        await poller.shutdown()  # nor does stopping twice

    assert [e.type for e in recorder.events] == [
        EventType.SCHEDULER_STARTED,
        EventType.SCHEDULER_STOPPED,
    ] * 2
    assert {e.worker_id for e in recorder.events} == {poller.worker_id}


# -- logging -------------------------------------------------------------------------------

LOGGER = "fastapi_jobpoller"


def library_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER or r.name.startswith(LOGGER + ".")]


def field(record: logging.LogRecord, name: str) -> Any:
    return record.__dict__.get(name)


@sqlite_only
async def test_every_event_is_logged_under_the_library_logger_with_structured_fields(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    poller = build(make_poller)
    async with poller:
        await poller.start_poll(
            "steps", {"key": "k", "finish_after": 2}, poll_id="k", interval=0.01
        )
        await ended(poller, "k")
        run = await poller.run_job_now((await poller.add_job("noop", FAR_FUTURE, job_id="j")).id)
        await runs_reach(poller, JobRunState.SUCCEEDED, 1)

    events = [r for r in library_records(caplog) if field(r, "event") in set(EventType)]
    assert {r.name for r in events} == {"fastapi_jobpoller.events"}
    logged = Counter(field(r, "event") for r in events)
    assert logged == {
        "scheduler_started": 1,
        "poll_submitted": 1,
        "poll_attempt_started": 2,
        "poll_pending": 1,
        "poll_succeeded": 1,
        "job_added": 1,
        "job_submitted": 1,
        "job_executed": 1,
        "scheduler_stopped": 1,
    }
    (succeeded,) = (r for r in events if field(r, "event") == "poll_succeeded")
    assert succeeded.levelno == logging.DEBUG
    assert (field(succeeded, "poll_id"), field(succeeded, "function")) == ("k", "steps")
    assert (field(succeeded, "attempt"), field(succeeded, "outcome")) == (2, "succeeded")
    assert isinstance(field(succeeded, "duration"), float)
    assert field(succeeded, "worker_id") == poller.worker_id
    assert succeeded.getMessage() == "poll_succeeded k attempt=2 outcome=succeeded"
    (executed,) = (r for r in events if field(r, "event") == "job_executed")
    assert (field(executed, "job_id"), field(executed, "run_id")) == ("j", run.id)
    assert field(executed, "scheduled_at") == run.scheduled_at
    assert (field(executed, "function"), field(executed, "outcome")) == ("noop", "succeeded")
    assert isinstance(field(executed, "duration"), float)


@sqlite_only
async def test_a_healthy_poller_at_info_logs_only_starts_stops_and_job_changes(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    poller = build(make_poller)
    async with poller:
        for n in range(3):
            await poller.start_poll(
                "steps", {"key": f"h{n}", "finish_after": 3}, poll_id=f"h{n}", interval=0.01
            )
        await poller.add_job("noop", IntervalTrigger(seconds=0.05), job_id="j")
        for n in range(3):
            await ended(poller, f"h{n}")
        await runs_reach(poller, JobRunState.SUCCEEDED, 3)

    assert [(field(r, "event"), r.levelname) for r in library_records(caplog)] == [
        ("scheduler_started", "INFO"),
        ("job_added", "INFO"),
        ("scheduler_stopped", "INFO"),
    ]


@sqlite_only
async def test_failures_are_logged_at_warning_or_error_with_the_error(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    poller = build(make_poller)
    async with poller:
        await poller.start_poll(
            "raises", {"key": "r", "times": 1}, poll_id="transient", interval=0.01
        )
        await poller.start_poll("gives_up", {"reason": "refused"}, poll_id="failed")
        await poller.start_poll(
            "steps", {"key": "c", "finish_after": 1}, poll_id="callback", callbacks=["flaky"]
        )
        run = await poller.run_job_now(
            (await poller.add_job("every_other", FAR_FUTURE, arguments={"key": "j"}, job_id="j")).id
        )
        await poller.run_job_now("j")  # the second call raises
        for poll_id in ("transient", "failed", "callback"):
            await ended(poller, poll_id)
        await runs_reach(poller, JobRunState.FAILED, 1)

    problems = [
        (
            field(r, "event"),
            r.levelname,
            field(r, "poll_id") or field(r, "job_id"),
            field(r, "error"),
        )
        for r in library_records(caplog)
        if r.levelno >= logging.WARNING
    ]
    assert sorted(problems) == [
        ("job_error", "ERROR", "j", "ValueError: even call 2"),
        ("poll_callback_failed", "ERROR", "callback", "RuntimeError: first delivery for callback"),
        ("poll_failed", "WARNING", "failed", "refused"),
        ("poll_pending", "WARNING", "transient", "ValueError: boom 1"),
    ]
    assert run.job_id == "j"


@sqlite_only
async def test_the_library_configures_no_log_handlers(make_poller: PollerFactory) -> None:
    root_handlers = list(logging.getLogger().handlers)
    poller = build(make_poller)
    async with poller:
        await poller.start_poll("gives_up", {"reason": "x"}, poll_id="x")
        await ended(poller, "x")

    assert logging.getLogger().handlers == root_handlers
    library_loggers = [
        logging.getLogger(name)
        for name in logging.root.manager.loggerDict
        if name == LOGGER or name.startswith(LOGGER + ".")
    ]
    assert library_loggers, "the library logs nothing?"
    for logger in library_loggers:
        assert logger.propagate, logger.name
        assert all(isinstance(h, logging.NullHandler) for h in logger.handlers), logger.name


# -- listeners -----------------------------------------------------------------------------


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


# -- two real processes on one PostgreSQL database -----------------------------------------

WORKER_SETTINGS = {
    "idle_wait_seconds": 0.05,
    "lease_seconds": 5.0,
    "shutdown_grace_seconds": 5.0,
    "callback_retry_seconds": 0.05,
    "thread_pool_size": 4,
}


class Worker:
    """One `tests/support/event_worker.py` process: commands on stdin, answers on stdout."""

    def __init__(self, name: str, env: dict[str, str], arguments: list[str], log: Path) -> None:
        self.name, self.log_path = name, log
        self._log: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.event_worker", *arguments],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        self.pid = self.process.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def log(self) -> str:
        self._log.flush()
        return f"--- stderr of worker {self.name} ---\n{self.log_path.read_text()[-4000:]}"

    def expect(self, prefix: str, timeout: float = WORK_TIMEOUT) -> str:
        give_up_at = time.monotonic() + timeout
        while time.monotonic() < give_up_at:
            try:
                line = self._lines.get(timeout=max(give_up_at - time.monotonic(), 0.01))
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"worker {self.name} exited before {prefix!r}\n{self.log()}")
            if line.startswith(prefix):
                return line
        pytest.fail(f"worker {self.name} did not say {prefix!r} in {timeout} s\n{self.log()}")

    def command(self, answer: str, **command: Any) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.expect(answer)

    def stop(self) -> None:
        """SIGTERM, as a process manager would; check it exited cleanly."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=STOP_TIMEOUT) == 0, self.log()
        self.expect("STOPPED", STOP_TIMEOUT)
        unexpected = [
            line
            for line in self.log_path.read_text().splitlines()
            if line.startswith(("ERROR", "CRITICAL", "Traceback"))
            and "poll_callback_failed" not in line  # the test's callback fails on purpose
        ]
        assert unexpected == [], self.log()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        self._reader.join(timeout=STOP_TIMEOUT)
        self._log.close()


@dataclass
class SharedDatabase:
    engine: sa.Engine
    tables: Tables
    events: sa.Table
    calls: sa.Table

    def rows(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(statement).all())

    def count(self, statement: sa.Select[Any]) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())


@pytest.fixture
def shared_database(postgresql_url: str) -> Iterator[SharedDatabase]:
    prefix = f"ev{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(postgresql_url)
    metadata = sa.MetaData()
    database = SharedDatabase(
        engine,
        Tables(prefix),
        events_table(prefix + "events", metadata),
        ledger_table(prefix + "calls", metadata),
    )
    try:
        metadata.create_all(engine)
        yield database
    finally:
        database.tables.metadata.drop_all(engine)
        metadata.drop_all(engine)
        engine.dispose()


@pytest.mark.processes
@pytest.mark.postgresql
def test_two_processes_on_one_database_report_every_occurrence_exactly_once(
    postgresql_url: str, shared_database: SharedDatabase, tmp_path: Path
) -> None:
    polls_per_worker, attempts = 30, 3
    prefix = shared_database.tables.polls.name.removesuffix("polls")
    settings = {**WORKER_SETTINGS, "database_url": postgresql_url, "table_prefix": prefix}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOLLER_")}
    env.update({f"JOBPOLLER_{k.upper()}": str(v) for k, v in settings.items()})
    arguments = ["--events", shared_database.events.name, "--calls", shared_database.calls.name]
    workers = [Worker(name, env, arguments, tmp_path / f"{name}.log") for name in "ab"]
    try:
        a, b = workers
        pids = {}
        for worker in workers:
            _, pid, _ = worker.expect("READY", START_TIMEOUT).split()
            pids[worker.name] = int(pid)
        for worker in workers:
            worker.command(
                "SUBMITTED",
                op="submit",
                count=polls_per_worker,
                id_prefix=worker.name,
                finish_after=attempts,
                options={"interval": 0.02, "callbacks": ["fails_first"]},
            )
        a.command("ADDED", op="add_job", job_id="ticker", seconds=0.1)
        polls, runs = shared_database.tables.polls, shared_database.tables.job_runs
        wait_for_workers(
            lambda: (
                shared_database.count(
                    sa.select(sa.func.count())
                    .select_from(polls)
                    .where(polls.c.state == "succeeded", polls.c.callbacks_pending.is_(False))
                )
                == 2 * polls_per_worker
                and shared_database.count(
                    sa.select(sa.func.count()).select_from(runs).where(runs.c.state == "succeeded")
                )
                >= 5
            ),
            workers,
            "every poll ended with its callbacks delivered, and the job ran",
        )
        b.command("PAUSED", op="pause_job", job_id="ticker")
        wait_for_workers(
            lambda: (
                shared_database.count(
                    sa.select(sa.func.count())
                    .select_from(runs)
                    .where(runs.c.state.in_(("running", "queued")))
                )
                == 0
            ),
            workers,
            "the job's last run finished",
        )
        a.command("REMOVED", op="remove_job", job_id="ticker")
        for worker in workers:
            worker.stop()
    finally:
        for worker in workers:
            worker.close()

    events = shared_database.rows(sa.select(shared_database.events))
    by_pid = {pid: name for name, pid in pids.items()}
    assert Counter(
        (e.event, by_pid[e.pid]) for e in events if e.event.startswith("scheduler_")
    ) == {
        ("scheduler_started", "a"): 1,
        ("scheduler_started", "b"): 1,
        ("scheduler_stopped", "a"): 1,
        ("scheduler_stopped", "b"): 1,
    }
    poll_ids = {f"{name}{n:04d}" for name in "ab" for n in range(polls_per_worker)}
    poll_events: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for event in events:
        if event.poll_id is not None:
            poll_events[event.poll_id].append(event)
    assert set(poll_events) == poll_ids
    for poll_id, rows in poll_events.items():
        (submitted,) = (r for r in rows if r.event == "poll_submitted")
        assert by_pid[submitted.pid] == poll_id[0], "submitted by the process that was asked"
        attempts_of = defaultdict(list)
        for row in rows:
            attempts_of[row.event].append(row.attempt)
        assert {k: sorted(v) for k, v in attempts_of.items()} == {
            "poll_submitted": [None],
            "poll_attempt_started": [1, 2, 3],
            "poll_pending": [1, 2],
            "poll_succeeded": [3],
            "poll_callback_failed": [None],
        }, poll_id
        (callback_failed,) = (r for r in rows if r.event == "poll_callback_failed")
        assert callback_failed.callback == "fails_first"
    attempt_pids = {e.pid for e in events if e.event == "poll_attempt_started"}
    assert attempt_pids == set(pids.values()), "the attempts did not spread over both processes"
    calls = Counter(
        (row.key, row.kind) for row in shared_database.rows(sa.select(shared_database.calls))
    )
    assert all(calls[(poll_id, "call")] == attempts for poll_id in poll_ids)
    assert all(calls[(poll_id, "callback")] == 2 for poll_id in poll_ids)

    job_events = [e for e in events if e.job_id is not None]
    assert Counter((e.event, by_pid[e.pid]) for e in job_events if e.run_id is None) == {
        ("job_added", "a"): 1,
        ("job_paused", "b"): 1,
        ("job_removed", "a"): 1,
    }
    stored_runs = {
        r.id: r for r in shared_database.rows(sa.select(runs).where(runs.c.job_id == "ticker"))
    }
    outcomes = [e for e in job_events if e.run_id is not None and e.event != "job_submitted"]
    assert Counter(e.run_id for e in outcomes) == dict.fromkeys(stored_runs, 1)
    for event in outcomes:
        run = stored_runs[event.run_id]
        assert event.event == EVENT_OF_RUN_STATE[JobRunState(run.state)].value
        assert (event.attempt, event.outcome) == (run.attempt, run.state)
    executed = {e.run_id for e in outcomes if e.event in ("job_executed", "job_error")}
    submitted_runs = Counter(e.run_id for e in job_events if e.event == "job_submitted")
    assert submitted_runs == dict.fromkeys(executed, 1)
    assert Counter(
        row.key
        for row in shared_database.rows(sa.select(shared_database.calls))
        if row.kind == "tick"
    )["ticker"] == len(executed)
