"""Poll events: each occurrence fires once, with what a listener needs."""

from collections import Counter, defaultdict
from collections.abc import Iterable

import anyio
import pytest

from fastapi_jobpoller import Event, EventType, PollState
from tests.conftest import PollerFactory
from tests.helpers import QUIET, Recorder, build, ended, eventually

pytestmark = pytest.mark.anyio


def by_subject(events: Iterable[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.poll_id or event.run_id or event.job_id or ""].append(event)
    return grouped


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
