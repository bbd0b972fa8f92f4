"""Every event is logged under the library's logger with structured fields; a healthy
poller is quiet at INFO; failures are logged at WARNING or ERROR; the library adds no
log handlers."""

import logging
from collections import Counter

import pytest

from fastapi_jobpoller import EventType, IntervalTrigger, JobRunState
from tests.conftest import PollerFactory
from tests.helpers import (
    FAR_FUTURE,
    LOGGER,
    build,
    ended,
    field,
    library_records,
    runs_reach,
    sqlite_only,
)

pytestmark = pytest.mark.anyio


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
    assert succeeded.getMessage() == 'poll_succeeded "k" attempt=2 outcome=succeeded'
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


@sqlite_only
async def test_the_same_trouble_of_the_same_poll_is_logged_once_a_minute_and_heard_every_time(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    poller = build(make_poller)
    heard: list[str] = []
    poller.add_listener(lambda event: heard.append(str(event.error)), EventType.POLL_PENDING)

    @poller.poll_function()
    def flaky() -> None:
        raise ConnectionError("the status service refused")

    async with poller:
        poll = await poller.start_poll("flaky", interval=0.01, max_errors=20)
        await ended(poller, poll.id)

    pending = [r for r in library_records(caplog) if field(r, "event") == "poll_pending"]
    warned = [r for r in pending if r.levelno >= logging.WARNING]
    assert len(pending) == 20 and len(warned) == 1
    assert [r.levelno for r in pending[1:]] == [logging.DEBUG] * 19
    assert len(heard) == 20


@sqlite_only
async def test_a_failure_text_cannot_forge_a_log_line_or_turn_it_around(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    poller = build(make_poller)
    forged = 'card declined\nINFO fastapi_jobpoller: all is well \u202e"quote\\'

    async with poller:
        poll = await poller.start_poll("gives_up", {"reason": forged}, poll_id="forger")
        await ended(poller, poll.id)

    (failed,) = (r for r in library_records(caplog) if field(r, "event") == "poll_failed")
    message = failed.getMessage()
    assert message == (
        'poll_failed "forger" attempt=1 outcome=failed error="card declined\\u000aINFO '
        'fastapi_jobpoller: all is well \\u202e\\"quote\\\\"'
    )
    assert message.isprintable()
    assert field(failed, "error") == forged  # the structured field keeps the text as it was
