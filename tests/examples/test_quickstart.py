"""examples/quickstart.py runs as the docs say.

The quickstart is imported afresh for each test, after the environment is set, because
`JobPoller()` reads its `JOBPOLLER_*` settings when the module builds it.
"""

import functools
import time
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_jobpoller import JobRunState
from tests.support.examples_support import (
    WAIT_SECONDS,
    clear_settings_environment,
    load_example,
    poller_of,
)

API_KEY = "quickstart-test-key-0123456789"


@pytest.fixture
def quickstart(monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str) -> ModuleType:
    """The quickstart module, built with its database pointed at the test's database."""
    clear_settings_environment(monkeypatch)
    monkeypatch.setenv("JOBPOLLER_DATABASE_URL", database_url)
    monkeypatch.setenv("JOBPOLLER_TABLE_PREFIX", table_prefix)
    monkeypatch.setenv("JOBPOLLER_API_KEY", API_KEY)
    return load_example("quickstart")


def app_of(module: ModuleType) -> FastAPI:
    app = module.app
    assert isinstance(app, FastAPI)
    return app


def wait_until_ended(client: TestClient, poll_id: str) -> dict[str, Any]:
    give_up_at = time.monotonic() + WAIT_SECONDS
    while True:
        response = client.get(f"/status/{poll_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["state"] not in ("pending", "running") or time.monotonic() > give_up_at:
            return status
        time.sleep(0.1)


def test_the_quickstart_watches_an_external_job_until_it_succeeds(
    quickstart: ModuleType,
) -> None:
    with TestClient(app_of(quickstart)) as client:
        started = client.post("/start")
        assert started.status_code == 202, started.text
        poll_id = started.json()["poll_id"]

        status = wait_until_ended(client, poll_id)

    assert status["state"] == "succeeded"
    assert status["progress"] == "2 of 3 checks"
    assert status["result"]["rows"] == 42
    assert quickstart.status_checks[status["result"]["external_id"]] == 3


def test_the_quickstart_answers_404_for_an_unknown_poll(quickstart: ModuleType) -> None:
    with TestClient(app_of(quickstart)) as client:
        response = client.get("/status/no-such-poll")
    assert response.status_code == 404


def test_the_quickstarts_scheduled_job_runs_on_its_interval(quickstart: ModuleType) -> None:
    poller = poller_of(quickstart)
    with TestClient(app_of(quickstart)) as client:
        portal = client.portal
        assert portal is not None
        give_up_at = time.monotonic() + WAIT_SECONDS
        finished: list[Any] = []
        while not finished and time.monotonic() < give_up_at:
            time.sleep(0.1)
            runs = portal.call(functools.partial(poller.list_job_runs, job_id="backlog"))
            finished = [run for run in runs if run.finished_at is not None]

    assert finished, "the backlog job never finished a run"
    assert finished[0].state is JobRunState.SUCCEEDED
    assert finished[0].result == 0


def test_the_quickstarts_management_api_needs_the_api_key(quickstart: ModuleType) -> None:
    with TestClient(app_of(quickstart)) as client:
        anonymous = client.get("/jobpoller/jobs/backlog")
        with_key = client.get("/jobpoller/jobs/backlog", headers={"X-API-Key": API_KEY})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    assert with_key.status_code == 200
    assert with_key.json()["function"] == "report_backlog"


def test_a_second_quickstart_process_keeps_the_job_the_first_one_added(
    quickstart: ModuleType,
) -> None:
    # Same environment, so the same database: like a second `uvicorn --workers` process.
    second = load_example("quickstart")
    with TestClient(app_of(quickstart)), TestClient(app_of(second)) as client:
        response = client.get("/jobpoller/jobs", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    assert [job["id"] for job in response.json()["items"]] == ["backlog"]
