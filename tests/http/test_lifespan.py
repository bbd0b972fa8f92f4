"""`mount_scheduler(app)`: settings from the environment, lifespan composition, mounting."""

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from fastapi_jobpoller import (
    ConfigurationError,
    JobPoller,
    Pending,
    mount_scheduler,
)
from tests.conftest import FAST_SETTINGS

KEY = "lifespan-tests-admin-key-0001"


def make_poller(tmp_path: Path, **overrides: Any) -> JobPoller:
    settings = {**FAST_SETTINGS, "database_url": f"sqlite:///{tmp_path}/jobpoller.db"}
    return JobPoller(**{**settings, "api_key": KEY, **overrides})


def table_names(database_file: Path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{database_file}")
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_mounting_without_a_poller_builds_one_from_jobpoller_env_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBPOLLER_DATABASE_URL", f"sqlite:///{tmp_path}/from-env.db")
    monkeypatch.setenv("JOBPOLLER_TABLE_PREFIX", "envtest_")
    monkeypatch.setenv("JOBPOLLER_API_KEY", KEY)
    monkeypatch.setenv("JOBPOLLER_API_PREFIX", "/ops/scheduler")
    monkeypatch.setenv("JOBPOLLER_MAX_PAGE_SIZE", "7")
    app = FastAPI()
    poller = mount_scheduler(app)
    assert poller.settings.database_url == f"sqlite:///{tmp_path}/from-env.db"
    assert poller.settings.max_page_size == 7
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        assert client.get("/ops/scheduler/health").json()["status"] == "ok"
        assert client.get("/ops/scheduler/polls", params={"limit": 7}).status_code == 200
        assert client.get("/ops/scheduler/polls", params={"limit": 8}).status_code == 422
        assert client.get("/ops/scheduler/polls", headers={"X-API-Key": "x"}).status_code == 401
    assert "envtest_polls" in table_names(tmp_path / "from-env.db")


def test_app_state_jobpoller_is_the_mounted_poller(tmp_path: Path) -> None:
    app = FastAPI()
    poller = make_poller(tmp_path)
    assert mount_scheduler(app, poller) is poller
    assert app.state.jobpoller is poller

    @app.get("/uses-the-poller")
    async def uses_the_poller(request: Request) -> list[str]:
        return [p.id for p in await request.app.state.jobpoller.list_polls()]

    with TestClient(app) as client:
        assert client.get("/uses-the-poller").json() == []


def test_nothing_starts_until_the_lifespan_runs(tmp_path: Path) -> None:
    database_file = tmp_path / "jobpoller.db"
    app = FastAPI()
    poller = mount_scheduler(app, make_poller(tmp_path))
    assert not poller.running
    assert not database_file.exists()
    client = TestClient(app)
    assert not database_file.exists()
    with client:
        assert poller.running
        assert {"jobpoller_polls", "jobpoller_jobs", "jobpoller_job_runs"} <= table_names(
            database_file
        )
    assert not poller.running


def test_the_host_lifespan_state_is_visible_in_requests(tmp_path: Path) -> None:
    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"greeting": "hello from the host"}

    app = FastAPI(lifespan=host_lifespan)

    @app.get("/greeting")
    async def greeting(request: Request) -> str:
        value: str = request.state.greeting
        return value

    mount_scheduler(app, make_poller(tmp_path))
    with TestClient(app) as client:
        assert client.get("/greeting").json() == "hello from the host"


def test_the_host_starts_first_and_the_poller_stops_before_the_host_cleans_up(
    tmp_path: Path,
) -> None:
    events: list[tuple[str, bool]] = []
    poller = make_poller(tmp_path)

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append(("host started", poller.running))
        yield
        events.append(("host cleans up", poller.running))

    app = FastAPI(lifespan=host_lifespan)
    mount_scheduler(app, poller)
    with TestClient(app):
        events.append(("serving", poller.running))
    assert events == [("host started", False), ("serving", True), ("host cleans up", False)]


def test_work_in_flight_at_shutdown_finishes_while_host_resources_are_open(
    tmp_path: Path,
) -> None:
    resource = {"open": False}
    attempt_started = threading.Event()
    open_when_the_attempt_ended: list[bool] = []
    poller = make_poller(tmp_path)

    @poller.poll_function()
    async def slow_check() -> Pending:
        attempt_started.set()
        await asyncio.sleep(0.3)
        open_when_the_attempt_ended.append(resource["open"])
        return Pending()

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        resource["open"] = True
        yield
        resource["open"] = False

    app = FastAPI(lifespan=host_lifespan)
    mount_scheduler(app, poller)
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        client.post("/jobpoller/polls", json={"function": "slow_check", "interval": 60})
        assert attempt_started.wait(timeout=10)
    # Shutdown waited for the attempt, and only then did the host close its resource.
    assert open_when_the_attempt_ended == [True]
    assert resource["open"] is False


def test_a_poller_that_cannot_start_fails_the_startup_and_the_host_still_cleans_up(
    tmp_path: Path,
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("host started")
        try:
            yield
        finally:
            events.append("host cleaned up")

    app = FastAPI(lifespan=host_lifespan)
    # Told not to create tables, on a database that has none: a configuration error.
    poller = make_poller(tmp_path, create_tables=False)
    mount_scheduler(app, poller)
    with pytest.raises(ConfigurationError, match="missing"), TestClient(app):
        pass
    assert events == ["host started", "host cleaned up"]
    assert not poller.running


def test_a_failing_host_startup_never_starts_the_poller(tmp_path: Path) -> None:
    class HostFailure(Exception):
        pass

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise HostFailure("no configuration")
        yield

    app = FastAPI(lifespan=host_lifespan)
    poller = mount_scheduler(app, make_poller(tmp_path))
    with pytest.raises(HostFailure), TestClient(app):
        pass
    assert not poller.running
    assert not (tmp_path / "jobpoller.db").exists()


def test_mounting_twice_on_one_app_raises_configuration_error(tmp_path: Path) -> None:
    app = FastAPI()
    first = mount_scheduler(app, make_poller(tmp_path))
    with pytest.raises(ConfigurationError, match="already"):
        mount_scheduler(app, make_poller(tmp_path))
    assert app.state.jobpoller is first
    with TestClient(app) as client:
        operations = [
            (method, path)
            for path, item in client.get("/openapi.json").json()["paths"].items()
            for method in item
        ]
    # The refused second mount added no routes.
    assert len(operations) == len(set(operations))
    assert operations.count(("get", "/jobpoller/health")) == 1


def test_a_custom_prefix_and_tags_place_and_label_the_routes(tmp_path: Path) -> None:
    app = FastAPI()
    mount_scheduler(app, make_poller(tmp_path), prefix="/internal/jobs-api", tags=["ops"])
    with TestClient(app, headers={"X-API-Key": KEY}) as client:
        assert client.get("/internal/jobs-api/health").status_code == 200
        assert client.get("/internal/jobs-api/polls").status_code == 200
        assert client.get("/jobpoller/health").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
    ours = {path: item for path, item in paths.items() if path.startswith("/internal/jobs-api/")}
    assert "/internal/jobs-api/jobs/{job_id}/run" in ours
    assert not [path for path in paths if path.startswith("/jobpoller")]
    for item in ours.values():
        for operation in item.values():
            assert operation["tags"] == ["ops"]


def test_the_api_prefix_setting_is_the_default_prefix(tmp_path: Path) -> None:
    app = FastAPI()
    mount_scheduler(app, make_poller(tmp_path, api_prefix="/scheduler"))
    with TestClient(app) as client:
        assert client.get("/scheduler/health").status_code == 200
        assert client.get("/jobpoller/health").status_code == 404
