"""examples/reminder.py: a one-time reminder on a date trigger."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.examples_support import ADMIN, eventually, load_example, set_example_environment

REMINDER = {"user_id": "u-1", "message": "Meeting in 5 minutes"}


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str) -> ModuleType:
    set_example_environment(monkeypatch, database_url, table_prefix)
    return load_example("reminder")


@pytest.fixture
def client(example: ModuleType) -> Iterator[TestClient]:
    with TestClient(example.app) as started:
        yield started


def create(client: TestClient, in_seconds: float) -> dict[str, Any]:
    before = datetime.now(UTC)
    response = client.post("/reminders", json={**REMINDER, "in_seconds": in_seconds})
    after = datetime.now(UTC)
    assert response.status_code == 201, response.text
    reminder: dict[str, Any] = response.json()
    due_at = datetime.fromisoformat(reminder["due_at"])
    assert before + timedelta(seconds=in_seconds) <= due_at <= after + timedelta(seconds=in_seconds)
    assert reminder["sent"] is False
    return reminder


def wait_until_sent(client: TestClient, reminder_id: str) -> dict[str, Any]:
    def sent() -> dict[str, Any] | None:
        reminder: dict[str, Any] = client.get(f"/reminders/{reminder_id}").json()
        return reminder if reminder["sent"] else None

    return eventually(sent, what="the reminder to be sent")


def test_a_reminder_is_sent_once_at_its_time_and_its_job_is_then_removed(
    example: ModuleType, client: TestClient
) -> None:
    reminder = create(client, in_seconds=0.3)
    reminder_id = reminder["reminder_id"]

    answered = wait_until_sent(client, reminder_id)

    assert answered["due_at"] == reminder["due_at"]
    assert example.sent == [(REMINDER["user_id"], REMINDER["message"])]
    assert client.get(f"/jobpoller/jobs/{reminder_id}", headers=ADMIN).status_code == 404
    runs = client.get("/jobpoller/runs", params={"job_id": reminder_id}, headers=ADMIN).json()
    assert [(run["state"], run["result"]) for run in runs["items"]] == [
        ("succeeded", "reminded u-1")
    ]
    assert client.delete(f"/reminders/{reminder_id}").status_code == 404


def test_a_reminder_cancelled_before_its_time_is_never_sent(
    example: ModuleType, client: TestClient
) -> None:
    reminder = create(client, in_seconds=3600)
    reminder_id = reminder["reminder_id"]
    assert client.get(f"/reminders/{reminder_id}").json() == reminder

    assert client.delete(f"/reminders/{reminder_id}").status_code == 204

    assert client.get(f"/reminders/{reminder_id}").status_code == 404
    assert example.sent == []


def test_with_two_workers_a_reminder_is_sent_by_one_of_them_only(
    example: ModuleType,
) -> None:
    other_worker = load_example("reminder")  # same settings, same database
    with TestClient(example.app) as client, TestClient(other_worker.app):
        reminder_id = create(client, in_seconds=0.2)["reminder_id"]
        wait_until_sent(client, reminder_id)
    assert example.sent + other_worker.sent == [(REMINDER["user_id"], REMINDER["message"])]
