"""The management API over HTTP: the health route and the registered function names."""

from tests.helpers import Api


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
