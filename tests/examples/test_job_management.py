"""examples/job_management.py: each runtime operation on a job does what it prints."""

import re
from types import ModuleType

import pytest

from fastapi_jobpoller import Event, EventType, JobPoller
from tests.support.examples_support import load_example, poller_of, set_example_environment

pytestmark = pytest.mark.anyio

LINE = re.compile(
    r"^(?P<step>\w+) +rates-eur: every (?P<every>\d+) s with (?P<arguments>\{.*\}), "
    r"paused=(?P<paused>True|False), next run (?P<next>\S+)$"
)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str) -> ModuleType:
    set_example_environment(monkeypatch, database_url, table_prefix)
    return load_example("job_management")


async def test_each_step_changes_the_job_as_printed_and_the_job_is_gone_at_the_end(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    await example.main()

    *steps, last = capsys.readouterr().out.splitlines()
    parsed = [LINE.match(line) for line in steps]
    assert all(parsed), steps
    rows = {m["step"]: m for m in parsed if m is not None}
    assert [m["step"] for m in parsed if m is not None] == [
        "added",
        "read",
        "paused",
        "resumed",
        "rescheduled",
        "modified",
        "listed",
    ]
    assert rows["added"]["every"] == "60"
    assert rows["read"]["next"] == rows["added"]["next"]
    assert (rows["paused"]["paused"], rows["paused"]["next"]) == ("True", "never")
    # Resumed before its first tick came: the same next run as before the pause.
    assert (rows["resumed"]["paused"], rows["resumed"]["next"]) == ("False", rows["added"]["next"])
    assert rows["rescheduled"]["every"] == "120"
    assert rows["rescheduled"]["next"] > rows["added"]["next"]
    assert rows["modified"]["arguments"] == "{'currency': 'USD'}"
    assert rows["listed"]["next"] == rows["modified"]["next"]
    assert last == "removed     no job has id 'rates-eur'"

    async with JobPoller(poller_of(example).settings) as reader:
        assert await reader.list_jobs() == []


async def test_the_steps_emit_the_job_events_in_order(example: ModuleType) -> None:
    seen: list[EventType] = []

    async def record(event: Event) -> None:
        seen.append(event.type)

    job_events = [t for t in EventType if t.value.startswith("job_")]
    poller_of(example).add_listener(record, *job_events)
    await example.main()  # stopping the poller delivers every queued event first
    assert seen == [
        EventType.JOB_ADDED,
        EventType.JOB_PAUSED,
        EventType.JOB_RESUMED,
        EventType.JOB_MODIFIED,
        EventType.JOB_MODIFIED,
        EventType.JOB_REMOVED,
    ]
