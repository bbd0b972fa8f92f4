"""The management API, built by `tests.helpers.build_app` and started, for the tests here.

Tests run on SQLite (`api`, `refusing_api`); those whose SQL differs per database (listing,
paging, id conflicts, id comparison) use `any_db_api`, on PostgreSQL and MariaDB too.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import HEADERS, Api, Service, build_app


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
