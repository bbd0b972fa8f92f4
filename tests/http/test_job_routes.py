"""The management API over HTTP: the job routes, their success codes and error bodies."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.helpers import FAR_FUTURE_ISO, Api, add_job, assert_error, parse_time


@pytest.mark.parametrize(
    ("trigger", "first_run"),
    [
        ({"type": "interval", "hours": 2}, None),
        ({"type": "cron", "expression": "30 4 * * *"}, None),
        ({"type": "cron", "day_of_week": "mon", "hour": 6, "minute": 15}, None),
        ({"type": "date", "run_date": FAR_FUTURE_ISO}, datetime(2100, 1, 1, tzinfo=UTC)),
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
    later = {"type": "date", "run_date": FAR_FUTURE_ISO}
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
        trigger={"type": "date", "run_date": FAR_FUTURE_ISO},
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
            trigger={"type": "date", "run_date": FAR_FUTURE_ISO},
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
            trigger={"type": "date", "run_date": FAR_FUTURE_ISO},
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
    add_job(api, id="gone", function="record", trigger={"type": "date", "run_date": FAR_FUTURE_ISO})
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
        trigger={"type": "date", "run_date": FAR_FUTURE_ISO},
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
