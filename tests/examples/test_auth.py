"""examples/api_key_auth.py and examples/host_auth.py: who may use the management API."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.examples_support import ADMIN_KEY, load_example, set_example_environment

READ_KEY = "examples-read-key-0123456789"
NIGHTLY = {"function": "rebuild_search_index", "trigger": {"type": "cron", "hour": 3}}
NEWSLETTER = {
    "function": "send_newsletter",
    "arguments": {"edition": "weekly"},
    "trigger": {"type": "cron", "day_of_week": "mon", "hour": 8},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- API keys ----------------------------------------------------------------------------


@pytest.fixture
def api_key_client(
    monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str
) -> Iterator[TestClient]:
    set_example_environment(monkeypatch, database_url, table_prefix, read_api_key=READ_KEY)
    with TestClient(load_example("api_key_auth").app) as client:
        yield client


def test_the_admin_key_may_add_a_job_under_the_chosen_prefix(api_key_client: TestClient) -> None:
    added = api_key_client.post(
        "/admin/scheduler/jobs", json=NIGHTLY, headers={"X-API-Key": ADMIN_KEY}
    )
    assert added.status_code == 201, added.text
    assert added.json()["function"] == "rebuild_search_index"


def test_the_read_key_may_list_jobs_but_not_add_one(api_key_client: TestClient) -> None:
    read = {"X-API-Key": READ_KEY}
    assert api_key_client.get("/admin/scheduler/jobs", headers=read).status_code == 200
    refused = api_key_client.post("/admin/scheduler/jobs", json=NIGHTLY, headers=read)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"


def test_a_request_without_a_valid_key_is_refused_but_health_answers(
    api_key_client: TestClient,
) -> None:
    anonymous = api_key_client.get("/admin/scheduler/jobs")
    wrong = api_key_client.get("/admin/scheduler/jobs", headers={"X-API-Key": "x" * 20})
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "not_authenticated")
    assert anonymous.headers["WWW-Authenticate"] == "ApiKey"
    assert wrong.status_code == 401
    assert api_key_client.get("/admin/scheduler/health").status_code == 200


def test_with_no_key_configured_the_api_key_example_refuses_everyone(
    monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str
) -> None:
    set_example_environment(monkeypatch, database_url, table_prefix, api_key=None)
    with TestClient(load_example("api_key_auth").app) as client:
        refused = client.get("/admin/scheduler/jobs", headers={"X-API-Key": ADMIN_KEY})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")


# -- the host's own dependencies -------------------------------------------------------


@pytest.fixture
def host_client(
    monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str
) -> Iterator[TestClient]:
    # No API key: the app's own dependencies are the only credential.
    set_example_environment(monkeypatch, database_url, table_prefix, api_key=None)
    with TestClient(load_example("host_auth").app) as client:
        yield client


def test_an_operator_may_add_a_job(host_client: TestClient) -> None:
    added = host_client.post("/jobpoller/jobs", json=NEWSLETTER, headers=bearer("operator-token"))
    assert added.status_code == 201, added.text
    listed = host_client.get("/jobpoller/jobs", headers=bearer("operator-token")).json()
    assert [job["function"] for job in listed["items"]] == ["send_newsletter"]


def test_a_viewer_may_read_but_not_change(host_client: TestClient) -> None:
    assert host_client.get("/jobpoller/jobs", headers=bearer("viewer-token")).status_code == 200
    refused = host_client.post("/jobpoller/jobs", json=NEWSLETTER, headers=bearer("viewer-token"))
    assert (refused.status_code, refused.json()) == (403, {"detail": "operators only"})


def test_someone_not_signed_in_is_refused_but_health_answers(host_client: TestClient) -> None:
    for headers in ({}, bearer("stolen-token")):
        refused = host_client.get("/jobpoller/jobs", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert host_client.get("/jobpoller/health").status_code == 200


def test_the_apps_own_routes_use_the_same_dependency(host_client: TestClient) -> None:
    me = host_client.get("/me", headers=bearer("viewer-token"))
    assert me.json() == {"name": "victor", "roles": ["viewer"]}
    assert host_client.get("/me").status_code == 401
