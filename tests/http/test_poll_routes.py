"""The management API over HTTP: the poll routes, their success codes and error bodies."""

import time
from typing import Any

import pytest

from tests.helpers import (
    MAX_WAIT_SECONDS,
    Api,
    assert_error,
    parse_time,
    start_poll,
    wait_until_ended,
)


def test_starting_a_poll_answers_201_with_the_stored_poll(api: Api) -> None:
    created = start_poll(
        api,
        function="never_finishes",
        arguments={"ticket": "t-1"},
        id="poll-1",
        interval=7.5,
        max_attempts=9,
        callbacks=["note_finished"],
    )
    assert created["id"] == "poll-1"
    assert created["function"] == "never_finishes"
    assert created["arguments"] == {"ticket": "t-1"}
    assert created["state"] == "pending"
    assert created["interval"] == 7.5
    assert created["max_attempts"] == 9
    assert created["callbacks"] == ["note_finished"]


def test_a_poll_started_without_an_id_gets_a_new_one(api: Api) -> None:
    first = start_poll(api, function="never_finishes", arguments={"ticket": "same"})
    second = start_poll(api, function="never_finishes", arguments={"ticket": "same"})
    assert first["id"] != second["id"]


def test_getting_a_poll_returns_it_as_stored(any_db_api: Api) -> None:
    created = start_poll(
        any_db_api,
        function="never_finishes",
        arguments={"ticket": "t-get"},
        id="poll-get",
        delay=3600,
        # Values a single-precision column would round.
        interval=0.1,
        timeout=123456.789,
        jitter=0.123456789,
        max_interval=4321.0123,
    )
    response = any_db_api.client.get("/jobpoller/polls/poll-get")
    assert response.status_code == 200
    stored = response.json()
    for key in ("id", "function", "arguments", "state"):
        assert stored[key] == created[key], key
    assert (stored["interval"], stored["timeout"], stored["jitter"], stored["max_interval"]) == (
        0.1,
        123456.789,
        0.123456789,
        4321.0123,
    )
    assert parse_time(stored["created_at"]) == parse_time(created["created_at"])
    assert parse_time(stored["next_poll_at"]) == parse_time(created["next_poll_at"])


def test_starting_the_same_poll_again_answers_200_with_the_stored_poll(any_db_api: Api) -> None:
    body = {"function": "finish_after", "arguments": {"ticket": "again", "attempts": 1}}
    first = start_poll(any_db_api, id="again", **body)
    ended = wait_until_ended(any_db_api, "again")
    response = any_db_api.client.post("/jobpoller/polls", json={"id": "again", **body})
    assert response.status_code == 200, response.text
    repeated = response.json()
    assert repeated["id"] == "again"
    assert repeated["state"] == ended["state"] == "succeeded"
    assert parse_time(repeated["created_at"]) == parse_time(first["created_at"])
    assert any_db_api.service.attempts["again"] == 1


def test_reusing_a_poll_id_for_another_definition_answers_409(any_db_api: Api) -> None:
    start_poll(any_db_api, id="taken", function="never_finishes", arguments={"ticket": "a"})
    other_arguments = any_db_api.client.post(
        "/jobpoller/polls",
        json={"id": "taken", "function": "never_finishes", "arguments": {"ticket": "b"}},
    )
    assert_error(other_arguments, 409, "poll_conflict")
    other_function = any_db_api.client.post(
        "/jobpoller/polls",
        json={"id": "taken", "function": "finish_after", "arguments": {"ticket": "a"}},
    )
    assert_error(other_function, 409, "poll_conflict")


def test_poll_ids_that_differ_only_in_case_or_accents_are_different_polls(
    any_db_api: Api,
) -> None:
    ids = ["ticket", "Ticket", "tické"]
    for poll_id in ids:
        created = start_poll(
            any_db_api, id=poll_id, function="never_finishes", arguments={"ticket": poll_id}
        )
        assert created["id"] == poll_id
    for poll_id in ids:
        response = any_db_api.client.get(f"/jobpoller/polls/{poll_id}")
        assert response.status_code == 200
        assert response.json()["id"] == poll_id
        assert response.json()["arguments"] == {"ticket": poll_id}


def test_listing_polls_pages_through_all_of_them_newest_first(any_db_api: Api) -> None:
    ids = [f"page-{n}" for n in range(7)]
    for poll_id in ids:
        start_poll(any_db_api, id=poll_id, function="never_finishes", arguments={"ticket": "p"})
    first = any_db_api.client.get("/jobpoller/polls", params={"limit": 5}).json()
    assert [p["id"] for p in first["items"]] == ids[::-1][:5]
    assert (first["limit"], first["offset"], first["next_offset"]) == (5, 0, 5)
    second = any_db_api.client.get("/jobpoller/polls", params={"limit": 5, "offset": 5}).json()
    assert [p["id"] for p in second["items"]] == ids[::-1][5:]
    assert second["next_offset"] is None


def test_a_full_last_page_points_to_an_empty_one(any_db_api: Api) -> None:
    for n in range(4):
        start_poll(any_db_api, id=f"full-{n}", function="never_finishes", arguments={"ticket": "f"})
    page = any_db_api.client.get("/jobpoller/polls", params={"limit": 2, "offset": 2}).json()
    assert len(page["items"]) == 2
    assert page["next_offset"] == 4
    last = any_db_api.client.get("/jobpoller/polls", params={"limit": 2, "offset": 4}).json()
    assert last["items"] == []
    assert last["next_offset"] is None


def test_listing_polls_filters_by_states_and_function(any_db_api: Api) -> None:
    for n in range(2):
        start_poll(
            any_db_api,
            id=f"done-{n}",
            function="finish_after",
            arguments={"ticket": f"done-{n}", "attempts": 1},
        )
        wait_until_ended(any_db_api, f"done-{n}")
    for n in range(3):
        start_poll(any_db_api, id=f"open-{n}", function="never_finishes", arguments={"ticket": "o"})

    def listed(**params: Any) -> set[str]:
        response = any_db_api.client.get("/jobpoller/polls", params=params)
        assert response.status_code == 200, response.text
        return {p["id"] for p in response.json()["items"]}

    assert listed(state="succeeded") == {"done-0", "done-1"}
    assert listed(state=["pending", "running"]) == {"open-0", "open-1", "open-2"}
    assert listed(function="never_finishes") == {"open-0", "open-1", "open-2"}
    assert listed(function="finish_after", state="succeeded") == {"done-0", "done-1"}
    assert listed(function="finish_after", state="pending") == set()
    assert listed(function="Finish_After") == set()


def test_waiting_for_a_poll_returns_once_it_has_ended(api: Api) -> None:
    start_poll(
        api,
        id="waited",
        function="finish_after",
        arguments={"ticket": "waited", "attempts": 3},
        interval=0.01,
        callbacks=["note_finished"],
    )
    response = api.client.get("/jobpoller/polls/waited/wait", params={"timeout": 2})
    assert response.status_code == 200
    poll = response.json()
    assert poll["state"] == "succeeded"
    assert poll["result"] == {"ticket": "waited", "attempts": 3}
    assert poll["callbacks_pending"] is False
    assert api.service.finished == ["waited"]


def test_waiting_returns_the_unfinished_poll_when_the_timeout_passes(api: Api) -> None:
    start_poll(api, id="slow", function="never_finishes", arguments={"ticket": "slow"})
    started = time.monotonic()
    response = api.client.get("/jobpoller/polls/slow/wait", params={"timeout": 0.3})
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["state"] in ("pending", "running")
    assert waited >= 0.3


def test_waiting_longer_than_max_wait_seconds_is_refused_with_422(api: Api) -> None:
    start_poll(api, id="patient", function="never_finishes", arguments={"ticket": "p"})
    response = api.client.get(
        "/jobpoller/polls/patient/wait", params={"timeout": MAX_WAIT_SECONDS + 0.5}
    )
    body = assert_error(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["query", "timeout"]


def test_cancelling_an_unfinished_poll_answers_200_and_ends_it(api: Api) -> None:
    start_poll(
        api,
        id="doomed",
        function="never_finishes",
        arguments={"ticket": "d"},
        callbacks=["note_finished"],
    )
    response = api.client.post("/jobpoller/polls/doomed/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert wait_until_ended(api, "doomed")["state"] == "cancelled"
    assert api.service.finished == ["doomed"]


def test_cancelling_a_poll_that_has_ended_answers_409(api: Api) -> None:
    start_poll(api, id="over", function="finish_after", arguments={"ticket": "over", "attempts": 1})
    wait_until_ended(api, "over")
    response = api.client.post("/jobpoller/polls/over/cancel")
    assert_error(response, 409, "invalid_state")
    assert api.client.get("/jobpoller/polls/over").json()["state"] == "succeeded"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobpoller/polls/missing"),
        ("GET", "/jobpoller/polls/missing/wait"),
        ("POST", "/jobpoller/polls/missing/cancel"),
    ],
)
def test_an_unknown_poll_id_answers_404(refusing_api: Api, method: str, path: str) -> None:
    body = assert_error(refusing_api.client.request(method, path), 404, "poll_not_found")
    assert "missing" in body["detail"]
