"""The management API over HTTP answers 503 while the poller is not running or its
database is unreachable (PostgreSQL and MariaDB cut off for real), and recovers."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fastapi_jobpoller._storage.tables import Tables
from tests.conftest import MYSQL_URL_ENV, POSTGRESQL_URL_ENV, server_url
from tests.helpers import HEADERS, Service, assert_error, build_app, wait_until


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


def test_an_app_started_while_its_database_refuses_connections_serves_degraded_then_recovers(
    outage: Outage,
) -> None:
    # Refused for a while (a server restarting, a database being restored): the start
    # goes on, degraded, unlike an unknown database or user (tests/storage).
    outage.cut()
    app, _ = build_app(outage.url, outage.table_prefix, Service())
    with TestClient(app, headers=HEADERS) as client:
        try:
            health = client.get("/jobpoller/health")
            assert health.status_code == 503
            assert health.json()["database_ok"] is False
            assert_error(client.get("/jobpoller/polls"), 503, "database_unavailable")
        finally:
            outage.restore()
        wait_until(lambda: client.get("/jobpoller/health").status_code == 200, "recovery")
        started = client.post(
            "/jobpoller/polls",
            json={"function": "finish_after", "arguments": {"ticket": "x", "attempts": 1}},
        )
        assert started.status_code == 201, started.text
        poll = f"/jobpoller/polls/{started.json()['id']}"
        wait_until(lambda: client.get(poll).json()["state"] == "succeeded", "the poll ran")
