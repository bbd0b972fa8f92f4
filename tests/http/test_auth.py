"""Who may use the management API: secure by default, API keys, host dependencies."""

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.params import Depends as DependsParam
from fastapi.testclient import TestClient

from fastapi_jobpoller import JobPoller, Pending, mount_scheduler
from tests.conftest import FAST_SETTINGS

ADMIN_KEY = "auth-tests-admin-key-00000001"
READ_KEY = "auth-tests-read-key-000000001"
HOST_TOKEN = "Bearer host-token"

ClientFactory = Callable[..., Any]


def bearer_required(authorization: Annotated[str | None, Header()] = None) -> None:
    """The host's own authentication: a bearer token."""
    if authorization != HOST_TOKEN:
        raise HTTPException(401, "host: sign in first", headers={"WWW-Authenticate": "Bearer"})


def admin_role_required(x_role: Annotated[str | None, Header()] = None) -> None:
    """The host's own authorisation for changes: an admin role."""
    if x_role != "admin":
        raise HTTPException(403, "host: admins only")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ClientFactory]:
    """Start an app whose poller has the given auth settings; yields a client factory."""

    @contextmanager
    def start(
        *,
        dependencies: Sequence[DependsParam] = (),
        write_dependencies: Sequence[DependsParam] = (),
        **settings: Any,
    ) -> Iterator[TestClient]:
        poller = JobPoller(
            **FAST_SETTINGS,
            database_url=f"sqlite:///{tmp_path}/jobpoller.db",
            **settings,
        )

        @poller.poll_function()
        def watch(ticket: str) -> Pending:
            return Pending()

        app = FastAPI()
        mount_scheduler(
            app, poller, dependencies=dependencies, write_dependencies=write_dependencies
        )
        with TestClient(app) as client:
            yield client

    yield start


def management_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the management API, from OpenAPI, with ids filled in."""
    paths: dict[str, dict[str, Any]] = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path.replace("{poll_id}", "p-1").replace("{job_id}", "j-1"))
        for path, operations in paths.items()
        if path.startswith("/jobpoller/")
        for method in operations
    ]


def is_write(method: str) -> bool:
    return method != "GET"


def test_without_auth_configured_every_route_but_health_refuses_anonymous_callers(
    serve: ClientFactory,
) -> None:
    with serve() as client:
        routes = management_routes(client)
        answers = {(m, p): client.request(m, p) for m, p in routes}
    # Every route this API had when the test was written is among them (more may come).
    assert {
        ("GET", "/jobpoller/functions"),
        ("GET", "/jobpoller/polls"),
        ("POST", "/jobpoller/polls"),
        ("GET", "/jobpoller/polls/p-1"),
        ("GET", "/jobpoller/polls/p-1/wait"),
        ("POST", "/jobpoller/polls/p-1/cancel"),
        ("GET", "/jobpoller/jobs"),
        ("POST", "/jobpoller/jobs"),
        ("GET", "/jobpoller/jobs/j-1"),
        ("PATCH", "/jobpoller/jobs/j-1"),
        ("DELETE", "/jobpoller/jobs/j-1"),
        ("POST", "/jobpoller/jobs/j-1/pause"),
        ("POST", "/jobpoller/jobs/j-1/resume"),
        ("POST", "/jobpoller/jobs/j-1/run"),
    } < set(routes)
    refused = {route for route, response in answers.items() if response.status_code == 403}
    assert refused == set(routes) - {("GET", "/jobpoller/health")}
    for route in refused:
        body = answers[route].json()
        assert body["code"] == "forbidden", route
        assert "no auth is configured" in body["detail"]
    assert answers[("GET", "/jobpoller/health")].status_code == 200


def test_an_anonymous_write_without_auth_configured_changes_nothing(
    serve: ClientFactory, tmp_path: Path
) -> None:
    with serve() as client:
        response = client.post(
            "/jobpoller/polls", json={"function": "watch", "arguments": {"ticket": "t"}}
        )
        assert response.status_code == 403
    with serve(api_key=ADMIN_KEY) as client:
        listed = client.get("/jobpoller/polls", headers={"X-API-Key": ADMIN_KEY})
        assert listed.json()["items"] == []


def test_a_missing_api_key_answers_401_with_a_challenge(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY) as client:
        for method, path in [("GET", "/jobpoller/polls"), ("POST", "/jobpoller/jobs/j/run")]:
            response = client.request(method, path)
            assert response.status_code == 401
            assert response.json()["code"] == "not_authenticated"
            assert "X-API-Key" in response.json()["detail"]
            assert response.headers["www-authenticate"] == "ApiKey"


def test_a_wrong_api_key_answers_401(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY) as client:
        response = client.get("/jobpoller/polls", headers={"X-API-Key": "not-the-key"})
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"


def test_a_key_differing_only_in_its_last_character_is_refused(serve: ClientFactory) -> None:
    almost = ADMIN_KEY[:-1] + ("2" if ADMIN_KEY[-1] != "2" else "3")
    with serve(api_key=ADMIN_KEY) as client:
        for key in (almost, ADMIN_KEY[:-1], ADMIN_KEY + "1"):
            response = client.get("/jobpoller/polls", headers={"X-API-Key": key})
            assert response.status_code == 401, key


def test_the_admin_key_may_read_and_write(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY) as client:
        headers = {"X-API-Key": ADMIN_KEY}
        created = client.post(
            "/jobpoller/polls",
            json={"id": "w", "function": "watch", "arguments": {"ticket": "t"}},
            headers=headers,
        )
        assert created.status_code == 201
        assert client.get("/jobpoller/polls/w", headers=headers).status_code == 200
        assert client.get("/jobpoller/functions", headers=headers).status_code == 200


def test_health_stays_open_when_a_key_is_configured(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY) as client:
        assert client.get("/jobpoller/health").status_code == 200


def test_the_read_key_may_read_but_not_write(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY, read_api_key=READ_KEY) as client:
        reader = {"X-API-Key": READ_KEY}
        routes = management_routes(client)
        for method, path in routes:
            if not is_write(method):
                status = client.request(method, path, headers=reader).status_code
                assert status in (200, 404), (method, path, status)
        for method, path in filter(lambda route: is_write(route[0]), routes):
            response = client.request(method, path, headers=reader)
            assert response.status_code == 403, (method, path)
            assert response.json()["code"] == "forbidden"
            assert "only read" in response.json()["detail"]
        admin = client.post(
            "/jobpoller/polls",
            json={"function": "watch", "arguments": {"ticket": "t"}},
            headers={"X-API-Key": ADMIN_KEY},
        )
        assert admin.status_code == 201


def test_a_read_key_alone_leaves_writes_refused_to_everyone(serve: ClientFactory) -> None:
    with serve(read_api_key=READ_KEY) as client:
        reader = {"X-API-Key": READ_KEY}
        assert client.get("/jobpoller/polls", headers=reader).status_code == 200
        response = client.post("/jobpoller/jobs/j/pause", headers=reader)
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"


def test_host_dependencies_guard_every_route_but_health(serve: ClientFactory) -> None:
    with serve(dependencies=[Depends(bearer_required)]) as client:
        refused = client.get("/jobpoller/polls")
        assert refused.status_code == 401
        assert refused.json() == {"detail": "host: sign in first"}
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.post("/jobpoller/polls/p/cancel").status_code == 401
        signed_in = {"Authorization": HOST_TOKEN}
        assert client.get("/jobpoller/polls", headers=signed_in).status_code == 200
        created = client.post(
            "/jobpoller/polls",
            json={"function": "watch", "arguments": {"ticket": "t"}},
            headers=signed_in,
        )
        assert created.status_code == 201
        assert client.get("/jobpoller/health").status_code == 200


def test_write_dependencies_guard_only_the_routes_that_change_something(
    serve: ClientFactory,
) -> None:
    with serve(
        dependencies=[Depends(bearer_required)],
        write_dependencies=[Depends(admin_role_required)],
    ) as client:
        viewer = {"Authorization": HOST_TOKEN}
        admin = {"Authorization": HOST_TOKEN, "X-Role": "admin"}
        assert client.get("/jobpoller/polls", headers=viewer).status_code == 200
        body = {"function": "watch", "arguments": {"ticket": "t"}}
        refused = client.post("/jobpoller/polls", json=body, headers=viewer)
        assert (refused.status_code, refused.json()) == (403, {"detail": "host: admins only"})
        assert client.post("/jobpoller/polls", json=body, headers=admin).status_code == 201
        anonymous = client.post("/jobpoller/polls", json=body, headers={"X-Role": "admin"})
        assert anonymous.status_code == 401


def test_write_dependencies_alone_leave_reads_refused(serve: ClientFactory) -> None:
    with serve(write_dependencies=[Depends(admin_role_required)]) as client:
        admin = {"X-Role": "admin"}
        body = {"function": "watch", "arguments": {"ticket": "t"}}
        assert client.post("/jobpoller/polls", json=body, headers=admin).status_code == 201
        response = client.get("/jobpoller/polls", headers=admin)
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"


def test_a_key_and_host_dependencies_together_are_both_required(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY, dependencies=[Depends(bearer_required)]) as client:
        key_only = client.get("/jobpoller/polls", headers={"X-API-Key": ADMIN_KEY})
        assert key_only.status_code == 401
        assert key_only.json() == {"detail": "host: sign in first"}
        host_only = client.get("/jobpoller/polls", headers={"Authorization": HOST_TOKEN})
        assert host_only.status_code == 401
        assert host_only.json()["code"] == "not_authenticated"
        both = {"X-API-Key": ADMIN_KEY, "Authorization": HOST_TOKEN}
        assert client.get("/jobpoller/polls", headers=both).status_code == 200


def test_auth_disabled_lets_anonymous_callers_in_and_warns_at_startup(
    serve: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_jobpoller")
    with serve(auth_disabled=True) as client:
        created = client.post(
            "/jobpoller/polls", json={"function": "watch", "arguments": {"ticket": "t"}}
        )
        assert created.status_code == 201
        assert client.get("/jobpoller/polls").json()["items"][0]["id"] == created.json()["id"]
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "auth_disabled"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "local development" in warnings[0].getMessage()


def test_no_auth_disabled_warning_is_logged_when_auth_is_on(
    serve: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_jobpoller")
    with serve(api_key=ADMIN_KEY):
        pass
    assert not [r for r in caplog.records if getattr(r, "event", None) == "auth_disabled"]


def test_the_api_key_is_declared_as_a_security_scheme_in_openapi(serve: ClientFactory) -> None:
    with serve(api_key=ADMIN_KEY) as client:
        schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["JobPollerApiKey"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The api_key (admin) or read_api_key (read-only) setting.",
    }
    assert schema["paths"]["/jobpoller/polls"]["get"]["security"] == [{"JobPollerApiKey": []}]
    assert "security" not in schema["paths"]["/jobpoller/health"]["get"]
