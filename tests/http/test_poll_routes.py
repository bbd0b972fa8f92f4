"""The management API over HTTP: every route, its success codes and its error bodies.

Tests run on SQLite; those whose SQL differs per database (listing, paging, id
conflicts, id comparison, outages) run on PostgreSQL and MariaDB too.
"""

import queue
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_jobpoller import Done, JobPoller, Pending, PollInfo, mount_scheduler
from fastapi_jobpoller._storage.tables import Tables
from tests.conftest import FAST_SETTINGS, MYSQL_URL_ENV, POSTGRESQL_URL_ENV, server_url

API_KEY = "router-tests-admin-key-0001"
HEADERS = {"X-API-Key": API_KEY}
# Small limits, so that the tests can cross them cheaply.
MAX_PAGE_SIZE = 5
MAX_WAIT_SECONDS = 2.0
MAX_ARGUMENTS_BYTES = 1024
FAR_FUTURE = "2100-01-01T00:00:00Z"


@dataclass
class Service:
    """What the registered functions saw."""

    attempts: Counter[str] = field(default_factory=Counter)
    job_runs: "queue.Queue[str]" = field(default_factory=queue.Queue)
    finished: list[str] = field(default_factory=list)


@dataclass
class Api:
    client: TestClient
    poller: JobPoller
    service: Service


def build_app(database_url: str, table_prefix: str, service: Service) -> tuple[FastAPI, JobPoller]:
    poller = JobPoller(
        **{
            **FAST_SETTINGS,
            "database_url": database_url,
            "table_prefix": table_prefix,
            "api_key": API_KEY,
            "max_page_size": MAX_PAGE_SIZE,
            "max_wait_seconds": MAX_WAIT_SECONDS,
            "max_arguments_bytes": MAX_ARGUMENTS_BYTES,
        }
    )

    @poller.poll_function()
    def finish_after(ticket: str, attempts: int = 2) -> Pending | Done:
        service.attempts[ticket] += 1
        seen = service.attempts[ticket]
        if seen >= attempts:
            return Done({"ticket": ticket, "attempts": seen})
        return Pending(progress=seen)

    @poller.poll_function()
    def never_finishes(ticket: str) -> Pending:
        return Pending(progress="still waiting")

    @poller.poll_function()
    def reports_the_unstorable(kind: str) -> Pending | Done:
        values = {"nan": float("nan"), "infinity": float("inf"), "surrogate": "\ud800"}
        return Pending(progress=values[kind]) if kind == "infinity" else Done(values[kind])

    @poller.job_function()
    def record(label: str = "tick") -> str:
        service.job_runs.put(label)
        return label

    @poller.job_function()
    def cleanup() -> None:
        return None

    @poller.callback()
    def note_finished(poll: PollInfo) -> None:
        service.finished.append(poll.id)

    app = FastAPI()
    mount_scheduler(app, poller)
    return app, poller


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API on SQLite, started, with the admin key sent by default."""
    service = Service()
    app, poller = build_app(f"sqlite:///{tmp_path}/jobpoller.db", "jobpoller_", service)
    with TestClient(app, headers=HEADERS) as client:
        yield Api(client, poller, service)


@pytest.fixture(scope="module")
def refusing_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API on SQLite shared by the tests of refused requests, which change nothing."""
    service = Service()
    database = tmp_path_factory.mktemp("refusals") / "jobpoller.db"
    app, poller = build_app(f"sqlite:///{database}", "jobpoller_", service)
    with TestClient(app, headers=HEADERS) as client:
        yield Api(client, poller, service)


@pytest.fixture
def any_db_api(database_url: str, table_prefix: str) -> Iterator[Api]:
    """The API on each database (SQLite, PostgreSQL, MariaDB)."""
    service = Service()
    app, poller = build_app(database_url, table_prefix, service)
    with TestClient(app, headers=HEADERS) as client:
        yield Api(client, poller, service)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check an error answer's status and stable code; return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def start_poll(api: Api, **body: Any) -> dict[str, Any]:
    response = api.client.post("/jobpoller/polls", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def wait_until_ended(api: Api, poll_id: str) -> dict[str, Any]:
    response = api.client.get(
        f"/jobpoller/polls/{poll_id}/wait", params={"timeout": MAX_WAIT_SECONDS}
    )
    assert response.status_code == 200, response.text
    poll: dict[str, Any] = response.json()
    assert poll["state"] in ("succeeded", "failed", "timed_out", "cancelled"), poll
    return poll


def add_job(api: Api, **body: Any) -> dict[str, Any]:
    response = api.client.post("/jobpoller/jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- health and functions ----------------------------------------------------------------


def test_health_answers_ok_while_the_engine_runs_and_the_database_answers(api: Api) -> None:
    response = api.client.get("/jobpoller/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["engine_alive"] is True
    assert body["database_ok"] is True
    assert body["worker_id"] == api.poller.worker_id


def test_functions_lists_the_registered_names_of_each_kind(api: Api) -> None:
    response = api.client.get("/jobpoller/functions")
    assert response.status_code == 200
    assert response.json() == {
        "poll_functions": ["finish_after", "never_finishes", "reports_the_unstorable"],
        "job_functions": ["cleanup", "record"],
        "callbacks": ["note_finished"],
    }


# -- polls -------------------------------------------------------------------------------


def test_starting_a_poll_answers_201_with_the_stored_poll(api: Api) -> None:
    created = start_poll(
        api,
        function="never_finishes",
        arguments={"ticket": "t-1"},
        id="poll-1",
        interval=7.5,
        max_attempts=9,
        callbacks=["note_finished"],
    )
    assert created["id"] == "poll-1"
    assert created["function"] == "never_finishes"
    assert created["arguments"] == {"ticket": "t-1"}
    assert created["state"] == "pending"
    assert created["interval"] == 7.5
    assert created["max_attempts"] == 9
    assert created["callbacks"] == ["note_finished"]


def test_a_poll_started_without_an_id_gets_a_new_one(api: Api) -> None:
    first = start_poll(api, function="never_finishes", arguments={"ticket": "same"})
    second = start_poll(api, function="never_finishes", arguments={"ticket": "same"})
    assert first["id"] != second["id"]


def test_getting_a_poll_returns_it_as_stored(any_db_api: Api) -> None:
    created = start_poll(
        any_db_api,
        function="never_finishes",
        arguments={"ticket": "t-get"},
        id="poll-get",
        delay=3600,
        # Values a single-precision column would round.
        interval=0.1,
        timeout=123456.789,
        jitter=0.123456789,
        max_interval=4321.0123,
    )
    response = any_db_api.client.get("/jobpoller/polls/poll-get")
    assert response.status_code == 200
    stored = response.json()
    for key in ("id", "function", "arguments", "state"):
        assert stored[key] == created[key], key
    assert (stored["interval"], stored["timeout"], stored["jitter"], stored["max_interval"]) == (
        0.1,
        123456.789,
        0.123456789,
        4321.0123,
    )
    assert parse_time(stored["created_at"]) == parse_time(created["created_at"])
    assert parse_time(stored["next_poll_at"]) == parse_time(created["next_poll_at"])


def test_starting_the_same_poll_again_answers_200_with_the_stored_poll(any_db_api: Api) -> None:
    body = {"function": "finish_after", "arguments": {"ticket": "again", "attempts": 1}}
    first = start_poll(any_db_api, id="again", **body)
    ended = wait_until_ended(any_db_api, "again")
    response = any_db_api.client.post("/jobpoller/polls", json={"id": "again", **body})
    assert response.status_code == 200, response.text
    repeated = response.json()
    assert repeated["id"] == "again"
    assert repeated["state"] == ended["state"] == "succeeded"
    assert parse_time(repeated["created_at"]) == parse_time(first["created_at"])
    assert any_db_api.service.attempts["again"] == 1


def test_reusing_a_poll_id_for_another_definition_answers_409(any_db_api: Api) -> None:
    start_poll(any_db_api, id="taken", function="never_finishes", arguments={"ticket": "a"})
    other_arguments = any_db_api.client.post(
        "/jobpoller/polls",
        json={"id": "taken", "function": "never_finishes", "arguments": {"ticket": "b"}},
    )
    assert_error(other_arguments, 409, "poll_conflict")
    other_function = any_db_api.client.post(
        "/jobpoller/polls",
        json={"id": "taken", "function": "finish_after", "arguments": {"ticket": "a"}},
    )
    assert_error(other_function, 409, "poll_conflict")


def test_poll_ids_that_differ_only_in_case_or_accents_are_different_polls(
    any_db_api: Api,
) -> None:
    ids = ["ticket", "Ticket", "tické"]
    for poll_id in ids:
        created = start_poll(
            any_db_api, id=poll_id, function="never_finishes", arguments={"ticket": poll_id}
        )
        assert created["id"] == poll_id
    for poll_id in ids:
        response = any_db_api.client.get(f"/jobpoller/polls/{poll_id}")
        assert response.status_code == 200
        assert response.json()["id"] == poll_id
        assert response.json()["arguments"] == {"ticket": poll_id}


def test_listing_polls_pages_through_all_of_them_newest_first(any_db_api: Api) -> None:
    ids = [f"page-{n}" for n in range(7)]
    for poll_id in ids:
        start_poll(any_db_api, id=poll_id, function="never_finishes", arguments={"ticket": "p"})
    first = any_db_api.client.get("/jobpoller/polls", params={"limit": 5}).json()
    assert [p["id"] for p in first["items"]] == ids[::-1][:5]
    assert (first["limit"], first["offset"], first["next_offset"]) == (5, 0, 5)
    second = any_db_api.client.get("/jobpoller/polls", params={"limit": 5, "offset": 5}).json()
    assert [p["id"] for p in second["items"]] == ids[::-1][5:]
    assert second["next_offset"] is None


def test_a_full_last_page_points_to_an_empty_one(any_db_api: Api) -> None:
    for n in range(4):
        start_poll(any_db_api, id=f"full-{n}", function="never_finishes", arguments={"ticket": "f"})
    page = any_db_api.client.get("/jobpoller/polls", params={"limit": 2, "offset": 2}).json()
    assert len(page["items"]) == 2
    assert page["next_offset"] == 4
    last = any_db_api.client.get("/jobpoller/polls", params={"limit": 2, "offset": 4}).json()
    assert last["items"] == []
    assert last["next_offset"] is None


def test_listing_polls_filters_by_states_and_function(any_db_api: Api) -> None:
    for n in range(2):
        start_poll(
            any_db_api,
            id=f"done-{n}",
            function="finish_after",
            arguments={"ticket": f"done-{n}", "attempts": 1},
        )
        wait_until_ended(any_db_api, f"done-{n}")
    for n in range(3):
        start_poll(any_db_api, id=f"open-{n}", function="never_finishes", arguments={"ticket": "o"})

    def listed(**params: Any) -> set[str]:
        response = any_db_api.client.get("/jobpoller/polls", params=params)
        assert response.status_code == 200, response.text
        return {p["id"] for p in response.json()["items"]}

    assert listed(state="succeeded") == {"done-0", "done-1"}
    assert listed(state=["pending", "running"]) == {"open-0", "open-1", "open-2"}
    assert listed(function="never_finishes") == {"open-0", "open-1", "open-2"}
    assert listed(function="finish_after", state="succeeded") == {"done-0", "done-1"}
    assert listed(function="finish_after", state="pending") == set()
    assert listed(function="Finish_After") == set()


def test_waiting_for_a_poll_returns_once_it_has_ended(api: Api) -> None:
    start_poll(
        api,
        id="waited",
        function="finish_after",
        arguments={"ticket": "waited", "attempts": 3},
        interval=0.01,
        callbacks=["note_finished"],
    )
    response = api.client.get("/jobpoller/polls/waited/wait", params={"timeout": 2})
    assert response.status_code == 200
    poll = response.json()
    assert poll["state"] == "succeeded"
    assert poll["result"] == {"ticket": "waited", "attempts": 3}
    assert poll["callbacks_pending"] is False
    assert api.service.finished == ["waited"]


def test_waiting_returns_the_unfinished_poll_when_the_timeout_passes(api: Api) -> None:
    start_poll(api, id="slow", function="never_finishes", arguments={"ticket": "slow"})
    started = time.monotonic()
    response = api.client.get("/jobpoller/polls/slow/wait", params={"timeout": 0.3})
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["state"] in ("pending", "running")
    assert waited >= 0.3


def test_waiting_longer_than_max_wait_seconds_is_refused_with_422(api: Api) -> None:
    start_poll(api, id="patient", function="never_finishes", arguments={"ticket": "p"})
    response = api.client.get(
        "/jobpoller/polls/patient/wait", params={"timeout": MAX_WAIT_SECONDS + 0.5}
    )
    body = assert_error(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["query", "timeout"]


def test_cancelling_an_unfinished_poll_answers_200_and_ends_it(api: Api) -> None:
    start_poll(
        api,
        id="doomed",
        function="never_finishes",
        arguments={"ticket": "d"},
        callbacks=["note_finished"],
    )
    response = api.client.post("/jobpoller/polls/doomed/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert wait_until_ended(api, "doomed")["state"] == "cancelled"
    assert api.service.finished == ["doomed"]


def test_cancelling_a_poll_that_has_ended_answers_409(api: Api) -> None:
    start_poll(api, id="over", function="finish_after", arguments={"ticket": "over", "attempts": 1})
    wait_until_ended(api, "over")
    response = api.client.post("/jobpoller/polls/over/cancel")
    assert_error(response, 409, "invalid_state")
    assert api.client.get("/jobpoller/polls/over").json()["state"] == "succeeded"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobpoller/polls/missing"),
        ("GET", "/jobpoller/polls/missing/wait"),
        ("POST", "/jobpoller/polls/missing/cancel"),
    ],
)
def test_an_unknown_poll_id_answers_404(refusing_api: Api, method: str, path: str) -> None:
    body = assert_error(refusing_api.client.request(method, path), 404, "poll_not_found")
    assert "missing" in body["detail"]


# -- jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "first_run"),
    [
        ({"type": "interval", "hours": 2}, None),
        ({"type": "cron", "expression": "30 4 * * *"}, None),
        ({"type": "cron", "day_of_week": "mon", "hour": 6, "minute": 15}, None),
        ({"type": "date", "run_date": FAR_FUTURE}, datetime(2100, 1, 1, tzinfo=UTC)),
    ],
    ids=["interval", "cron-expression", "cron-fields", "date"],
)
def test_creating_a_job_answers_201_with_its_first_run_time(
    api: Api, trigger: dict[str, Any], first_run: datetime | None
) -> None:
    before = datetime.now(UTC)
    job = add_job(api, id="scheduled", function="record", trigger=trigger)
    assert job["id"] == "scheduled"
    assert job["function"] == "record"
    assert job["arguments"] == {"label": "tick"}
    assert job["trigger"]["type"] == trigger["type"]
    assert job["paused"] is False
    next_run = parse_time(job["next_run_at"])
    assert next_run > before
    if first_run is not None:
        assert next_run == first_run
    if trigger["type"] == "interval":
        assert next_run - before >= timedelta(hours=2)
    if trigger.get("expression") == "30 4 * * *":
        assert (next_run.hour, next_run.minute) == (4, 30)
    if trigger.get("day_of_week") == "mon":
        assert (next_run.weekday(), next_run.hour, next_run.minute) == (0, 6, 15)


def test_a_job_added_paused_has_no_next_run(api: Api) -> None:
    job = add_job(api, function="record", trigger={"type": "interval", "minutes": 5}, paused=True)
    assert job["paused"] is True
    assert job["next_run_at"] is None


def test_creating_a_job_with_a_taken_id_answers_409(any_db_api: Api) -> None:
    later = {"type": "date", "run_date": FAR_FUTURE}
    add_job(any_db_api, id="nightly", function="record", trigger=later)
    response = any_db_api.client.post(
        "/jobpoller/jobs", json={"id": "nightly", "function": "cleanup", "trigger": later}
    )
    assert_error(response, 409, "job_conflict")
    assert any_db_api.client.get("/jobpoller/jobs/nightly").json()["function"] == "record"


def test_replace_existing_overwrites_the_job_with_that_id(any_db_api: Api) -> None:
    add_job(
        any_db_api,
        id="report",
        function="record",
        arguments={"label": "old"},
        trigger={"type": "date", "run_date": FAR_FUTURE},
    )
    replaced = add_job(
        any_db_api,
        id="report",
        function="record",
        arguments={"label": "new"},
        trigger={"type": "interval", "hours": 6},
        replace_existing=True,
    )
    assert replaced["arguments"] == {"label": "new"}
    assert replaced["trigger"]["type"] == "interval"
    listed = any_db_api.client.get("/jobpoller/jobs").json()["items"]
    assert [(j["id"], j["arguments"]) for j in listed] == [("report", {"label": "new"})]


def test_job_ids_that_differ_only_in_case_are_different_jobs(any_db_api: Api) -> None:
    for job_id in ("nightly", "Nightly"):
        add_job(
            any_db_api,
            id=job_id,
            function="record",
            arguments={"label": job_id},
            trigger={"type": "date", "run_date": FAR_FUTURE},
        )
    for job_id in ("nightly", "Nightly"):
        job = any_db_api.client.get(f"/jobpoller/jobs/{job_id}").json()
        assert (job["id"], job["arguments"]) == (job_id, {"label": job_id})


def test_listing_jobs_pages_through_them_by_id_and_filters_by_function(
    any_db_api: Api,
) -> None:
    ids = [f"job-{n}" for n in range(7)]
    for job_id in reversed(ids):
        add_job(
            any_db_api,
            id=job_id,
            function="record",
            trigger={"type": "date", "run_date": FAR_FUTURE},
        )
    add_job(any_db_api, id="sweeper", function="cleanup", trigger={"type": "interval", "days": 1})
    first = any_db_api.client.get("/jobpoller/jobs", params={"limit": 5}).json()
    assert [j["id"] for j in first["items"]] == ids[:5]
    assert first["next_offset"] == 5
    second = any_db_api.client.get("/jobpoller/jobs", params={"limit": 5, "offset": 5}).json()
    assert [j["id"] for j in second["items"]] == [*ids[5:], "sweeper"]
    assert second["next_offset"] is None
    swept = any_db_api.client.get("/jobpoller/jobs", params={"function": "cleanup"}).json()
    assert [j["id"] for j in swept["items"]] == ["sweeper"]


def test_getting_a_job_returns_it_as_stored(any_db_api: Api) -> None:
    created = add_job(
        any_db_api,
        id="kept",
        function="record",
        arguments={"label": "kept"},
        trigger={"type": "cron", "expression": "0 3 * * *", "timezone": "Europe/Paris"},
        misfire_grace_time=42.123456789,
        coalesce=False,
        max_instances=2,
    )
    stored = any_db_api.client.get("/jobpoller/jobs/kept").json()
    for key in ("id", "function", "arguments", "trigger", "paused", "coalesce"):
        assert stored[key] == created[key], key
    assert (stored["misfire_grace_time"], stored["max_instances"]) == (42.123456789, 2)
    assert parse_time(stored["next_run_at"]) == parse_time(created["next_run_at"])


def test_patching_a_job_changes_its_trigger_arguments_and_limits(api: Api) -> None:
    add_job(api, id="edited", function="record", trigger={"type": "interval", "hours": 1})
    retimed = api.client.patch(
        "/jobpoller/jobs/edited", json={"trigger": {"type": "cron", "expression": "45 5 * * *"}}
    )
    assert retimed.status_code == 200, retimed.text
    next_run = parse_time(retimed.json()["next_run_at"])
    assert (next_run.hour, next_run.minute) == (5, 45)
    relabelled = api.client.patch("/jobpoller/jobs/edited", json={"arguments": {"label": "new"}})
    assert relabelled.json()["arguments"] == {"label": "new"}
    limited = api.client.patch(
        "/jobpoller/jobs/edited",
        json={"misfire_grace_time": 12.5, "coalesce": False, "max_instances": 3},
    )
    assert limited.status_code == 200
    stored = api.client.get("/jobpoller/jobs/edited").json()
    assert stored["trigger"]["type"] == "cron"
    assert stored["arguments"] == {"label": "new"}
    assert (stored["misfire_grace_time"], stored["coalesce"], stored["max_instances"]) == (
        12.5,
        False,
        3,
    )


def test_an_empty_patch_leaves_the_job_as_it_was(api: Api) -> None:
    created = add_job(api, id="same", function="record", trigger={"type": "interval", "hours": 1})
    response = api.client.patch("/jobpoller/jobs/same", json={})
    assert response.status_code == 200
    assert response.json()["trigger"] == created["trigger"]
    assert response.json()["next_run_at"] == created["next_run_at"]


def test_deleting_a_job_answers_204_and_then_404(api: Api) -> None:
    add_job(api, id="gone", function="record", trigger={"type": "date", "run_date": FAR_FUTURE})
    response = api.client.delete("/jobpoller/jobs/gone")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(api.client.get("/jobpoller/jobs/gone"), 404, "job_not_found")
    assert_error(api.client.delete("/jobpoller/jobs/gone"), 404, "job_not_found")


def test_pausing_clears_the_next_run_and_resuming_sets_it_again(api: Api) -> None:
    add_job(api, id="rhythm", function="record", trigger={"type": "interval", "minutes": 10})
    paused = api.client.post("/jobpoller/jobs/rhythm/pause")
    assert paused.status_code == 200
    assert (paused.json()["paused"], paused.json()["next_run_at"]) == (True, None)
    assert api.client.get("/jobpoller/jobs/rhythm").json()["paused"] is True
    resumed = api.client.post("/jobpoller/jobs/rhythm/resume")
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert parse_time(resumed.json()["next_run_at"]) > datetime.now(UTC)


def test_running_a_job_now_answers_202_and_the_run_happens(api: Api) -> None:
    job = add_job(
        api,
        id="on-demand",
        function="record",
        arguments={"label": "now"},
        trigger={"type": "date", "run_date": FAR_FUTURE},
    )
    response = api.client.post("/jobpoller/jobs/on-demand/run")
    assert response.status_code == 202
    run = response.json()
    assert (run["job_id"], run["state"], run["arguments"]) == (
        "on-demand",
        "queued",
        {"label": "now"},
    )
    assert api.service.job_runs.get(timeout=10) == "now"
    # The extra run leaves the schedule as it was.
    assert api.client.get("/jobpoller/jobs/on-demand").json()["next_run_at"] == job["next_run_at"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/jobpoller/jobs/missing", None),
        ("PATCH", "/jobpoller/jobs/missing", {"max_instances": 2}),
        ("PATCH", "/jobpoller/jobs/missing", {"arguments": {"label": "x"}}),
        ("DELETE", "/jobpoller/jobs/missing", None),
        ("POST", "/jobpoller/jobs/missing/pause", None),
        ("POST", "/jobpoller/jobs/missing/resume", None),
        ("POST", "/jobpoller/jobs/missing/run", None),
    ],
)
def test_an_unknown_job_id_answers_404(
    refusing_api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    error = assert_error(refusing_api.client.request(method, path, json=body), 404, "job_not_found")
    assert "missing" in error["detail"]


# -- invalid requests --------------------------------------------------------------------


def test_an_unknown_function_name_answers_422(api: Api) -> None:
    poll = api.client.post("/jobpoller/polls", json={"function": "nope", "arguments": {}})
    assert "nope" in assert_error(poll, 422, "function_not_found")["detail"]
    # A job function is not a poll function, nor the other way round.
    wrong_kind = api.client.post("/jobpoller/polls", json={"function": "record"})
    assert_error(wrong_kind, 422, "function_not_found")
    job = api.client.post("/jobpoller/jobs", json={"function": "nope", "trigger": {"type": "date"}})
    assert_error(job, 422, "function_not_found")
    callback = api.client.post(
        "/jobpoller/polls",
        json={"function": "never_finishes", "arguments": {"ticket": "c"}, "callbacks": ["nope"]},
    )
    assert_error(callback, 422, "function_not_found")
    assert api.client.get("/jobpoller/polls").json()["items"] == []


@pytest.mark.parametrize(
    "expression", ["61 * * * *", "not a cron", "* * * * * * *", "0 0 31 2 *", "*/0 * * * *"]
)
def test_a_bad_cron_expression_answers_422(api: Api, expression: str) -> None:
    trigger = {"type": "cron", "expression": expression}
    created = api.client.post("/jobpoller/jobs", json={"function": "record", "trigger": trigger})
    assert_error(created, 422, "invalid_trigger")
    add_job(api, id="cron", function="record", trigger={"type": "interval", "hours": 1})
    patched = api.client.patch("/jobpoller/jobs/cron", json={"trigger": trigger})
    assert_error(patched, 422, "invalid_trigger")
    assert api.client.get("/jobpoller/jobs/cron").json()["trigger"]["type"] == "interval"


def test_bad_cron_fields_and_time_zones_answer_422(api: Api) -> None:
    for trigger in (
        {"type": "cron", "hour": "25"},
        {"type": "cron", "day_of_week": "someday"},
        {"type": "interval", "hours": 1, "timezone": "Mars/Olympus_Mons"},
    ):
        response = api.client.post(
            "/jobpoller/jobs", json={"function": "record", "trigger": trigger}
        )
        assert_error(response, 422, "invalid_trigger")


@pytest.mark.parametrize(
    ("arguments", "location"),
    [
        ({}, ["ticket"]),
        ({"ticket": ["not", "a", "string"]}, ["ticket"]),
        ({"ticket": "t", "attempts": "many"}, ["attempts"]),
        ({"ticket": "t", "unexpected": 1}, ["unexpected"]),
    ],
    ids=["missing", "wrong-type", "wrong-type-of-default", "extra"],
)
def test_arguments_that_do_not_fit_the_function_answer_422_with_field_errors(
    refusing_api: Api, arguments: dict[str, Any], location: list[str]
) -> None:
    response = refusing_api.client.post(
        "/jobpoller/polls", json={"function": "finish_after", "arguments": arguments}
    )
    body = assert_error(response, 422, "invalid_arguments")
    assert [error["loc"] for error in body["errors"]] == [location]


def test_job_arguments_that_do_not_fit_answer_422_on_create_and_patch(api: Api) -> None:
    created = api.client.post(
        "/jobpoller/jobs",
        json={"function": "record", "arguments": {"label": 5}, "trigger": {"type": "date"}},
    )
    assert_error(created, 422, "invalid_arguments")
    add_job(api, id="typed", function="record", trigger={"type": "date", "run_date": FAR_FUTURE})
    patched = api.client.patch("/jobpoller/jobs/typed", json={"arguments": {"colour": "red"}})
    assert_error(patched, 422, "invalid_arguments")
    assert api.client.get("/jobpoller/jobs/typed").json()["arguments"] == {"label": "tick"}


@pytest.mark.parametrize(
    "trigger",
    [
        {"type": "interval"},
        {"type": "interval", "seconds": 0},
        {"type": "interval", "seconds": -5},
        {"type": "interval", "weeks": 1e12},
    ],
    ids=["no-period", "zero", "negative", "too-long"],
)
def test_an_interval_trigger_out_of_range_answers_422(
    refusing_api: Api, trigger: dict[str, Any]
) -> None:
    response = refusing_api.client.post(
        "/jobpoller/jobs", json={"function": "record", "trigger": trigger}
    )
    body = assert_error(response, 422, "validation_error")
    assert body["errors"][0]["loc"][:2] == ["body", "trigger"]


@pytest.mark.parametrize("interval", [0, -1, 86_401])
def test_a_poll_interval_out_of_range_answers_422(refusing_api: Api, interval: float) -> None:
    response = refusing_api.client.post(
        "/jobpoller/polls",
        json={"function": "never_finishes", "arguments": {"ticket": "i"}, "interval": interval},
    )
    body = assert_error(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "interval"]


def test_arguments_over_max_arguments_bytes_answer_422_payload_too_large(api: Api) -> None:
    oversized = "x" * (MAX_ARGUMENTS_BYTES + 1)
    poll = api.client.post(
        "/jobpoller/polls", json={"function": "never_finishes", "arguments": {"ticket": oversized}}
    )
    assert "max_arguments_bytes" in assert_error(poll, 422, "payload_too_large")["detail"]
    job = api.client.post(
        "/jobpoller/jobs",
        json={"function": "record", "arguments": {"label": oversized}, "trigger": {"type": "date"}},
    )
    assert_error(job, 422, "payload_too_large")
    add_job(api, id="small", function="record", trigger={"type": "date", "run_date": FAR_FUTURE})
    patched = api.client.patch("/jobpoller/jobs/small", json={"arguments": {"label": oversized}})
    assert_error(patched, 422, "payload_too_large")
    fits = "x" * (MAX_ARGUMENTS_BYTES - len('{"ticket":""}'))
    start_poll(api, function="never_finishes", arguments={"ticket": fits})


@pytest.mark.parametrize("path", ["/jobpoller/polls", "/jobpoller/jobs"])
@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"limit": MAX_PAGE_SIZE + 1}, ["query", "limit"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"limit": "ten"}, ["query", "limit"]),
    ],
    ids=["over-max-page-size", "zero", "negative-offset", "not-a-number"],
)
def test_a_page_request_out_of_range_answers_422(
    refusing_api: Api, path: str, params: dict[str, Any], location: list[str]
) -> None:
    body = assert_error(refusing_api.client.get(path, params=params), 422, "validation_error")
    assert body["errors"][0]["loc"] == location


def test_an_unknown_state_filter_answers_422(refusing_api: Api) -> None:
    response = refusing_api.client.get("/jobpoller/polls", params={"state": "sleeping"})
    assert_error(response, 422, "validation_error")


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "content", "headers"),
    [
        ("/jobpoller/polls", b"{not json", JSON),
        ("/jobpoller/polls", b"\xc3\x28 not utf-8", JSON),
        ("/jobpoller/polls", b"[" * 100_000, JSON),
        ("/jobpoller/polls", b"", JSON),
        ("/jobpoller/polls", b"null", JSON),
        ("/jobpoller/polls", b'["never_finishes"]', JSON),
        ("/jobpoller/polls", b'{"function": 5}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes", "arguments": []}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes", "interval": "soon"}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes", "colour": "red"}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes"}', {"content-type": "text/plain"}),
        ("/jobpoller/jobs", b'{"function": "record"}', JSON),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": {"hours": 1}}', JSON),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": {"type": "weekly"}}', JSON),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": "daily"}', JSON),
        (
            "/jobpoller/jobs",
            b'{"function": "record", "trigger": {"type": "date", "run_date": "tomorrow"}}',
            JSON,
        ),
        (
            "/jobpoller/jobs",
            b'{"function": "record", "trigger": {"type": "cron", "expression": "0 * * * *",'
            b' "hour": 3}}',
            JSON,
        ),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": {"type": "date"}, "x": 1}', JSON),
    ],
)
def test_a_malformed_body_answers_422_never_500(
    refusing_api: Api, path: str, content: bytes, headers: dict[str, str]
) -> None:
    response = refusing_api.client.post(path, content=content, headers=headers)
    body = assert_error(response, 422, "validation_error")
    assert body["errors"]
    assert refusing_api.client.get(path).json()["items"] == []


def test_a_malformed_patch_body_answers_422(api: Api) -> None:
    add_job(api, id="patched", function="record", trigger={"type": "interval", "hours": 1})
    for content in (b"{", b'{"max_instances": 0}', b'{"trigger": {"type": "x"}}', b'{"id": "z"}'):
        response = api.client.patch("/jobpoller/jobs/patched", content=content, headers=JSON)
        assert_error(response, 422, "validation_error")


def test_ids_with_a_nul_character_answer_422(any_db_api: Api) -> None:
    lookup = any_db_api.client.get("/jobpoller/polls/a%00b")
    assert_error(lookup, 422, "validation_error")
    listed = any_db_api.client.get("/jobpoller/jobs", params={"function": "a\x00b"})
    assert_error(listed, 422, "validation_error")
    poll = any_db_api.client.post(
        "/jobpoller/polls",
        json={"id": "a\x00b", "function": "never_finishes", "arguments": {"ticket": "n"}},
    )
    assert_error(poll, 422, "invalid_arguments")
    job = any_db_api.client.post(
        "/jobpoller/jobs", json={"id": "a\x00b", "function": "record", "trigger": {"type": "date"}}
    )
    assert_error(job, 422, "invalid_arguments")


def test_an_id_with_a_slash_is_refused_as_no_path_could_name_it(api: Api) -> None:
    poll = api.client.post(
        "/jobpoller/polls",
        json={"id": "orders/42", "function": "never_finishes", "arguments": {"ticket": "s"}},
    )
    assert assert_error(poll, 422, "validation_error")["errors"][0]["loc"] == ["body", "id"]
    job = api.client.post(
        "/jobpoller/jobs", json={"id": "a/b", "function": "record", "trigger": {"type": "date"}}
    )
    assert_error(job, 422, "validation_error")


def test_arguments_holding_a_lone_surrogate_answer_422(any_db_api: Api) -> None:
    # Valid JSON, but no database can store "\ud800" as UTF-8.
    content = b'{"function": "never_finishes", "arguments": {"ticket": "\\ud800"}}'
    response = any_db_api.client.post("/jobpoller/polls", content=content, headers=JSON)
    assert_error(response, 422, "invalid_arguments")


def test_a_poll_whose_function_returns_what_no_database_stores_fails_cleanly(
    any_db_api: Api,
) -> None:
    for kind in ("nan", "infinity", "surrogate"):
        start_poll(
            any_db_api,
            id=f"bad-{kind}",
            function="reports_the_unstorable",
            arguments={"kind": kind},
            max_errors=0,
        )
        poll = wait_until_ended(any_db_api, f"bad-{kind}")
        assert poll["state"] == "failed", poll
        assert "not JSON" in poll["error"]
    listed = any_db_api.client.get(
        "/jobpoller/polls", params={"function": "reports_the_unstorable"}
    )
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 3


# -- unavailability ----------------------------------------------------------------------


def test_routes_answer_503_while_the_poller_is_not_running(tmp_path: Path) -> None:
    app, _ = build_app(f"sqlite:///{tmp_path}/jobpoller.db", "jobpoller_", Service())
    client = TestClient(app, headers=HEADERS)  # not entered: the lifespan never runs
    for method, path in [
        ("GET", "/jobpoller/polls"),
        ("GET", "/jobpoller/polls/any"),
        ("GET", "/jobpoller/polls/any/wait"),
        ("POST", "/jobpoller/polls/any/cancel"),
        ("GET", "/jobpoller/jobs"),
        ("POST", "/jobpoller/jobs/any/run"),
    ]:
        response = client.request(method, path)
        assert_error(response, 503, "not_running")
        assert response.headers["retry-after"].isdigit()
    health = client.get("/jobpoller/health")
    assert health.status_code == 503
    assert health.json()["engine_alive"] is False


class Outage:
    """A database URL the test can cut off for real, and reconnect."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"jp_outage_{uuid.uuid4().hex[:10]}"
        self.table_prefix = f"o{uuid.uuid4().hex[:10]}_"
        base = server_url(POSTGRESQL_URL_ENV if kind == "postgresql" else MYSQL_URL_ENV)
        self.admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            if kind == "postgresql":
                connection.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
                self.url = sa.make_url(base).set(database=self.name).render_as_string(False)
            else:
                # A user of its own: locking it refuses new connections to it alone.
                connection.execute(sa.text(f"CREATE USER '{self.name}'@'%' IDENTIFIED BY 'pw'"))
                database = sa.make_url(base).database
                connection.execute(sa.text(f"GRANT ALL ON `{database}`.* TO '{self.name}'@'%'"))
                url = sa.make_url(base).set(username=self.name, password="pw")
                self.url = url.render_as_string(False)

    def cut(self) -> None:
        """Refuse new connections, then end the open ones."""
        with self.admin.connect() as connection:
            if self.kind == "postgresql":
                connection.execute(sa.text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
                connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": self.name},
                )
            else:
                connection.execute(sa.text(f"ALTER USER '{self.name}'@'%' ACCOUNT LOCK"))
                sessions = connection.execute(
                    sa.text("SELECT id FROM information_schema.processlist WHERE user = :u"),
                    {"u": self.name},
                ).scalars()
                for session in list(sessions):
                    connection.execute(sa.text(f"KILL CONNECTION {int(session)}"))

    def restore(self) -> None:
        with self.admin.connect() as connection:
            if self.kind == "postgresql":
                connection.execute(sa.text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))
            else:
                connection.execute(sa.text(f"ALTER USER '{self.name}'@'%' ACCOUNT UNLOCK"))

    def remove(self) -> None:
        with self.admin.connect() as connection:
            if self.kind == "postgresql":
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            else:
                connection.execute(sa.text(f"DROP USER IF EXISTS '{self.name}'@'%'"))
        if self.kind != "postgresql":
            Tables(self.table_prefix).metadata.drop_all(self.admin)
        self.admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    control = Outage(request.param)
    yield control
    control.remove()


def test_routes_answer_503_while_the_database_is_unreachable_and_recover(
    outage: Outage,
) -> None:
    app, _ = build_app(outage.url, outage.table_prefix, Service())
    with TestClient(app, headers=HEADERS) as client:
        start_poll_body = {"function": "never_finishes", "arguments": {"ticket": "o"}}
        assert client.post("/jobpoller/polls", json={"id": "before", **start_poll_body}).is_success
        outage.cut()
        try:
            for method, path, body in [
                ("GET", "/jobpoller/polls", None),
                ("GET", "/jobpoller/polls/before", None),
                ("GET", "/jobpoller/polls/before/wait?timeout=0.1", None),
                ("POST", "/jobpoller/polls", {"id": "during", **start_poll_body}),
                ("POST", "/jobpoller/polls/before/cancel", None),
                ("GET", "/jobpoller/jobs", None),
                ("POST", "/jobpoller/jobs", {"function": "record", "trigger": {"type": "date"}}),
                ("POST", "/jobpoller/jobs/any/pause", None),
            ]:
                response = client.request(method, path, json=body)
                assert_error(response, 503, "database_unavailable")
                assert response.headers["retry-after"].isdigit()
            health = client.get("/jobpoller/health")
            assert health.status_code == 503
            assert (health.json()["status"], health.json()["database_ok"]) == (
                "unavailable",
                False,
            )
        finally:
            outage.restore()
        assert client.get("/jobpoller/polls/before").status_code == 200
        assert client.get("/jobpoller/health").json()["status"] == "ok"
