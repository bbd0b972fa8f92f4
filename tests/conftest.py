"""Shared fixtures: a real database per test (SQLite always; PostgreSQL and MariaDB from
env URLs) with its own table prefix, and a factory of started pollers."""

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import JobPoller
from fastapi_jobpoller._storage.tables import Tables

POSTGRESQL_URL_ENV = "JOBPOLLER_TEST_POSTGRESQL_URL"
MYSQL_URL_ENV = "JOBPOLLER_TEST_MYSQL_URL"
# In CI every database must really be exercised: a missing URL fails instead of skipping.
REQUIRE_ENV = "JOBPOLLER_TEST_REQUIRE_DATABASES"

# Settings that make tests quick: short sleeps and leases, no long grace periods.
FAST_SETTINGS: dict[str, object] = {
    "idle_wait_seconds": 0.05,
    "lease_seconds": 5.0,
    "shutdown_grace_seconds": 2.0,
    "default_poll_interval": 0.05,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server_url(env: str) -> str:
    """Return a server database URL from the environment, or skip (fail in CI)."""
    url = os.environ.get(env)
    if not url:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{env} is not set, but {REQUIRE_ENV} requires every database")
        pytest.skip(f"set {env} to run this test against that database")
    return url


def _drop(url: str, prefix: str) -> None:
    engine = sa.create_engine(url)
    try:
        Tables(prefix).metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A database URL; one run per database: SQLite, PostgreSQL, MariaDB/MySQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobpoller.db"
    return server_url(POSTGRESQL_URL_ENV if request.param == "postgresql" else MYSQL_URL_ENV)


@pytest.fixture
def postgresql_url() -> str:
    """The PostgreSQL URL alone, for tests about PostgreSQL specifically."""
    return server_url(POSTGRESQL_URL_ENV)


@pytest.fixture
def table_prefix(database_url: str) -> Iterator[str]:
    """A fresh table prefix, so tests sharing one server database never meet; dropped after."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    if not database_url.startswith("sqlite"):
        _drop(database_url, prefix)


PollerFactory = Callable[..., JobPoller]


@pytest.fixture
def make_poller(database_url: str, table_prefix: str) -> PollerFactory:
    """Build (not start) pollers on the test's database; keywords override settings."""

    def make(**overrides: object) -> JobPoller:
        settings = {
            **FAST_SETTINGS,
            "database_url": database_url,
            "table_prefix": table_prefix,
            **overrides,
        }
        return JobPoller(**settings)

    return make


@pytest.fixture
async def poller(make_poller: PollerFactory) -> AsyncIterator[JobPoller]:
    """A started poller with nothing registered (register before use is not possible:
    tests that need functions build their own with `make_poller`)."""
    async with make_poller() as started:
        yield started
