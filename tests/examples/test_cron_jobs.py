"""examples/cron_jobs.py: two declared cron jobs, due at the right local times.

The tests read when each job is next due rather than wait for 2:30 or 9:00. The zone is
Asia/Kolkata: five and a half hours from UTC (so a trigger read in UTC would be off by a
non-whole number of hours) and without daylight saving time (so the expected local times
always exist).
"""

import functools
import shlex
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from fastapi_jobpoller import JobInfo, JobRunState
from tests.support.examples_support import (
    ADMIN,
    eventually,
    load_example,
    poller_of,
    set_example_environment,
)

ZONE = ZoneInfo("Asia/Kolkata")
WEEKDAYS = range(0, 5)
EVERY_DAY = range(0, 7)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str) -> ModuleType:
    set_example_environment(monkeypatch, database_url, table_prefix, timezone=ZONE.key)
    return load_example("cron_jobs")


@pytest.fixture
def client(example: ModuleType) -> Iterator[TestClient]:
    with TestClient(example.app) as started:
        yield started


def get_job(client: TestClient, example: ModuleType, job_id: str) -> JobInfo:
    portal = client.portal
    assert portal is not None
    job: JobInfo = portal.call(functools.partial(poller_of(example).get_job, job_id))
    return job


def next_local_time(after: datetime, at: time, days: range) -> datetime:
    """Return the first `at` in ZONE, on one of `days` (Monday = 0), at or after `after`."""
    today = after.astimezone(ZONE).date()
    for offset in range(8):
        day: date = today + timedelta(days=offset)
        candidate = datetime.combine(day, at, tzinfo=ZONE)
        if candidate.weekday() in days and candidate >= after:
            return candidate
    raise AssertionError("no such time within a week")


def test_the_cleanup_is_next_due_at_2_30_local_time(
    example: ModuleType, client: TestClient
) -> None:
    job = get_job(client, example, "daily_cleanup")
    assert job.next_run_at is not None
    assert job.next_run_at == next_local_time(job.created_at, time(2, 30), EVERY_DAY)
    local = job.next_run_at.astimezone(ZONE)
    assert (local.hour, local.minute) == (2, 30)
    assert job.arguments == {"older_than_days": 30}


def test_the_report_is_next_due_at_9_on_the_next_weekday(
    example: ModuleType, client: TestClient
) -> None:
    job = get_job(client, example, "daily_report")
    assert job.next_run_at is not None
    assert job.next_run_at == next_local_time(job.created_at, time(9, 0), WEEKDAYS)
    assert job.next_run_at.astimezone(ZONE).weekday() < 5


def test_running_the_cleanup_now_deletes_only_entries_older_than_30_days(
    example: ModuleType, client: TestClient
) -> None:
    now = datetime.now(UTC)
    example.log_entries[:] = [now - timedelta(days=40), now - timedelta(days=31), now]
    queued = client.post("/jobpoller/jobs/daily_cleanup/run", headers=ADMIN)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["id"]

    def finished_run() -> dict[str, object] | None:
        run: dict[str, object] = client.get(f"/jobpoller/runs/{run_id}", headers=ADMIN).json()
        return run if run["finished_at"] is not None else None

    run = eventually(finished_run, what="the cleanup run")
    assert run["state"] == JobRunState.SUCCEEDED.value
    assert run["result"] == 2
    assert example.log_entries == [now]


def test_a_restart_keeps_each_declared_job_once_with_its_next_tick(
    example: ModuleType,
) -> None:
    with TestClient(example.app) as client:
        before = [get_job(client, example, j) for j in ("daily_cleanup", "daily_report")]
    restarted = load_example("cron_jobs")  # a new deploy, same code, same database
    with TestClient(restarted.app) as client:
        listed = client.get("/jobpoller/jobs", headers=ADMIN).json()["items"]
        after = [get_job(client, restarted, j) for j in ("daily_cleanup", "daily_report")]
    assert [job["id"] for job in listed] == ["daily_cleanup", "daily_report"]
    assert [job.next_run_at for job in after] == [job.next_run_at for job in before]


def curl_commands(section: str) -> list[list[str]]:
    """The curl commands of one section of docs/examples.md, split as a shell would."""
    text = (Path(__file__).parents[2] / "docs" / "examples.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line) for line in body.splitlines() if line.startswith("curl ")]


def test_the_docs_curl_commands_work_on_the_running_cron_example(client: TestClient) -> None:
    commands = curl_commands("Managing jobs at runtime")
    assert len(commands) == 3
    for command in commands:
        options = dict(zip(command[1:-1:2], command[2:-1:2], strict=True))
        pairs = zip(command[1:-2], command[2:-1], strict=True)
        headers = dict(h.split(": ", 1) for flag, h in pairs if flag == "-H")
        headers["X-API-Key"] = ADMIN["X-API-Key"]  # stands for $KEY
        path = command[-1].removeprefix("http://127.0.0.1:8000")
        response = client.request(options["-X"], path, headers=headers, content=options.get("-d"))
        assert response.status_code == 200, (command, response.text)
    job = client.get("/jobpoller/jobs/daily_cleanup", headers=ADMIN).json()
    assert (job["paused"], job["trigger"]["type"], job["trigger"]["minutes"]) == (
        False,
        "interval",
        2,
    )
