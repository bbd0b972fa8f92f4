"""examples/spark_kafka.py: submit, poll with backoff and a timeout, publish every end."""

import functools
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fastapi_jobpoller import PollAttemptInfo
from tests.support.examples_support import ADMIN, load_example, poller_of, set_example_environment

INTERVAL = 0.02


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str) -> ModuleType:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    set_example_environment(
        monkeypatch,
        database_url,
        table_prefix,
        default_poll_interval=str(INTERVAL),
        attempt_history="all",
    )
    return load_example("spark_kafka")


@pytest.fixture
def client(example: ModuleType) -> Iterator[TestClient]:
    with TestClient(example.app) as started:
        yield started


def submit(client: TestClient, **request: Any) -> str:
    response = client.post("/spark-jobs", json=request)
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def wait_for_end(client: TestClient, request_id: str) -> dict[str, Any]:
    response = client.get(
        f"/jobpoller/polls/{request_id}/wait", params={"timeout": 30}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    poll: dict[str, Any] = response.json()
    assert poll["state"] not in ("pending", "running"), poll
    assert poll["callbacks_pending"] is False
    return poll


def published(example: ModuleType) -> list[tuple[str, str, dict[str, Any]]]:
    messages: list[tuple[str, str, dict[str, Any]]] = example.publisher.messages
    return messages


def test_a_spark_job_is_polled_until_it_finishes_and_its_result_is_published(
    example: ModuleType, client: TestClient
) -> None:
    request_id = submit(client, stages=3)
    poll = wait_for_end(client, request_id)
    assert poll["state"] == "succeeded"
    assert poll["attempts"] == 3
    spark_job_id = poll["arguments"]["spark_job_id"]
    assert published(example) == [
        (
            "spark-job-results",
            request_id,
            {
                "request_id": request_id,
                "spark_job_id": spark_job_id,
                "state": "succeeded",
                "result": {"output": f"s3://results/{spark_job_id}/"},
                "error": None,
                "checks": 3,
            },
        )
    ]
    status = client.get(f"/spark-jobs/{request_id}").json()
    assert status["state"] == "succeeded"
    assert status["progress"] == {"stage": 2, "of": 3}


def test_a_failed_spark_job_is_published_with_its_reason(
    example: ModuleType, client: TestClient
) -> None:
    request_id = submit(client, stages=2, fails=True)
    poll = wait_for_end(client, request_id)
    assert (poll["state"], poll["error"]) == ("failed", "executor lost")
    [(_, key, message)] = published(example)
    assert key == request_id
    assert (message["state"], message["error"], message["checks"]) == (
        "failed",
        "executor lost",
        2,
    )


def test_a_spark_job_running_past_the_timeout_is_published_as_timed_out(
    example: ModuleType, client: TestClient
) -> None:
    request_id = submit(client, stages=10**9, timeout_seconds=0.5)
    poll = wait_for_end(client, request_id)
    assert poll["state"] == "timed_out"
    [(_, key, message)] = published(example)
    assert key == request_id
    assert message["state"] == "timed_out"
    assert message["error"] == "timed out after 0.5 s"


def test_the_wait_between_status_checks_doubles_from_the_interval(
    example: ModuleType, client: TestClient
) -> None:
    request_id = submit(client, stages=5)
    poll = wait_for_end(client, request_id)
    assert (poll["backoff_factor"], poll["max_interval"]) == (2.0, 300.0)
    portal = client.portal
    assert portal is not None
    attempts: list[PollAttemptInfo] = portal.call(
        functools.partial(poller_of(example).list_poll_attempts, poll_id=request_id)
    )
    starts = sorted(attempt.started_at for attempt in attempts)
    assert len(starts) == 5
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    # Attempt n+1 is not due before attempt n finished plus interval * 2 ** (n - 1).
    planned = [INTERVAL * 2**n for n in range(4)]
    assert all(gap >= wait for gap, wait in zip(gaps, planned, strict=True)), gaps


def test_an_unknown_request_id_answers_404(client: TestClient) -> None:
    assert client.get("/spark-jobs/nope").status_code == 404


def test_without_a_broker_url_messages_stay_in_memory_and_aiokafka_is_not_imported(
    example: ModuleType, client: TestClient
) -> None:
    assert isinstance(example.publisher, example.InMemoryPublisher)
    wait_for_end(client, submit(client, stages=1))
    assert len(published(example)) == 1
    assert "aiokafka" not in sys.modules


def test_a_broker_url_selects_the_kafka_publisher(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert isinstance(example.make_publisher(), example.KafkaPublisher)
    assert "aiokafka" not in sys.modules  # not even then, until it starts
