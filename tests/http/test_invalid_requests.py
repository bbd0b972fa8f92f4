"""The management API over HTTP: every invalid request gets a 4xx with a stable code,
never a 500."""

from typing import Any

import pytest

from tests.helpers import (
    FAR_FUTURE_ISO,
    MAX_ARGUMENTS_BYTES,
    MAX_PAGE_SIZE,
    Api,
    add_job,
    assert_error,
    start_poll,
    wait_until_ended,
)


def test_an_unknown_function_name_answers_422(api: Api) -> None:
    poll = api.client.post("/jobpoller/polls", json={"function": "nope", "arguments": {}})
    assert "nope" in assert_error(poll, 422, "function_not_found")["detail"]
    # A job function is not a poll function, nor the other way round.
    wrong_kind = api.client.post("/jobpoller/polls", json={"function": "record"})
    assert_error(wrong_kind, 422, "function_not_found")
    job = api.client.post("/jobpoller/jobs", json={"function": "nope", "trigger": {"type": "date"}})
    assert_error(job, 422, "function_not_found")
    callback = api.client.post(
        "/jobpoller/polls",
        json={"function": "never_finishes", "arguments": {"ticket": "c"}, "callbacks": ["nope"]},
    )
    assert_error(callback, 422, "function_not_found")
    assert api.client.get("/jobpoller/polls").json()["items"] == []


@pytest.mark.parametrize(
    "expression", ["61 * * * *", "not a cron", "* * * * * * *", "0 0 31 2 *", "*/0 * * * *"]
)
def test_a_bad_cron_expression_answers_422(api: Api, expression: str) -> None:
    # Refused when the body is read (numbers out of range, not 5 fields) or by the
    # scheduler (a date that never comes, names): 422 either way, never stored.
    trigger = {"type": "cron", "expression": expression}
    created = api.client.post("/jobpoller/jobs", json={"function": "record", "trigger": trigger})
    assert created.status_code == 422, created.text
    assert created.json()["code"] in ("invalid_trigger", "validation_error")
    add_job(api, id="cron", function="record", trigger={"type": "interval", "hours": 1})
    patched = api.client.patch("/jobpoller/jobs/cron", json={"trigger": trigger})
    assert patched.json()["code"] == created.json()["code"]
    assert api.client.get("/jobpoller/jobs/cron").json()["trigger"]["type"] == "interval"


def test_bad_cron_fields_and_time_zones_answer_422(api: Api) -> None:
    for trigger, code in (
        ({"type": "cron", "hour": "25"}, "validation_error"),
        ({"type": "cron", "day_of_week": "someday"}, "invalid_trigger"),
        ({"type": "interval", "hours": 1, "timezone": "Mars/Olympus_Mons"}, "invalid_trigger"),
    ):
        response = api.client.post(
            "/jobpoller/jobs", json={"function": "record", "trigger": trigger}
        )
        body = assert_error(response, 422, code)
        assert "hour='25'" in body["detail"] or code == "invalid_trigger"


@pytest.mark.parametrize(
    ("arguments", "location"),
    [
        ({}, ["ticket"]),
        ({"ticket": ["not", "a", "string"]}, ["ticket"]),
        ({"ticket": "t", "attempts": "many"}, ["attempts"]),
        ({"ticket": "t", "unexpected": 1}, ["unexpected"]),
    ],
    ids=["missing", "wrong-type", "wrong-type-of-default", "extra"],
)
def test_arguments_that_do_not_fit_the_function_answer_422_with_field_errors(
    refusing_api: Api, arguments: dict[str, Any], location: list[str]
) -> None:
    response = refusing_api.client.post(
        "/jobpoller/polls", json={"function": "finish_after", "arguments": arguments}
    )
    body = assert_error(response, 422, "invalid_arguments")
    assert [error["loc"] for error in body["errors"]] == [location]


def test_job_arguments_that_do_not_fit_answer_422_on_create_and_patch(api: Api) -> None:
    created = api.client.post(
        "/jobpoller/jobs",
        json={"function": "record", "arguments": {"label": 5}, "trigger": {"type": "date"}},
    )
    assert_error(created, 422, "invalid_arguments")
    add_job(
        api, id="typed", function="record", trigger={"type": "date", "run_date": FAR_FUTURE_ISO}
    )
    patched = api.client.patch("/jobpoller/jobs/typed", json={"arguments": {"colour": "red"}})
    assert_error(patched, 422, "invalid_arguments")
    assert api.client.get("/jobpoller/jobs/typed").json()["arguments"] == {"label": "tick"}


@pytest.mark.parametrize(
    "trigger",
    [
        {"type": "interval"},
        {"type": "interval", "seconds": 0},
        {"type": "interval", "seconds": -5},
        {"type": "interval", "weeks": 1e12},
    ],
    ids=["no-period", "zero", "negative", "too-long"],
)
def test_an_interval_trigger_out_of_range_answers_422(
    refusing_api: Api, trigger: dict[str, Any]
) -> None:
    response = refusing_api.client.post(
        "/jobpoller/jobs", json={"function": "record", "trigger": trigger}
    )
    body = assert_error(response, 422, "validation_error")
    assert body["errors"][0]["loc"][:2] == ["body", "trigger"]


@pytest.mark.parametrize("interval", [0, -1, 86_401])
def test_a_poll_interval_out_of_range_answers_422(refusing_api: Api, interval: float) -> None:
    response = refusing_api.client.post(
        "/jobpoller/polls",
        json={"function": "never_finishes", "arguments": {"ticket": "i"}, "interval": interval},
    )
    body = assert_error(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "interval"]


def test_arguments_over_max_arguments_bytes_answer_422_payload_too_large(api: Api) -> None:
    oversized = "x" * (MAX_ARGUMENTS_BYTES + 1)
    poll = api.client.post(
        "/jobpoller/polls", json={"function": "never_finishes", "arguments": {"ticket": oversized}}
    )
    assert "max_arguments_bytes" in assert_error(poll, 422, "payload_too_large")["detail"]
    job = api.client.post(
        "/jobpoller/jobs",
        json={"function": "record", "arguments": {"label": oversized}, "trigger": {"type": "date"}},
    )
    assert_error(job, 422, "payload_too_large")
    add_job(
        api, id="small", function="record", trigger={"type": "date", "run_date": FAR_FUTURE_ISO}
    )
    patched = api.client.patch("/jobpoller/jobs/small", json={"arguments": {"label": oversized}})
    assert_error(patched, 422, "payload_too_large")
    fits = "x" * (MAX_ARGUMENTS_BYTES - len('{"ticket":""}'))
    start_poll(api, function="never_finishes", arguments={"ticket": fits})


@pytest.mark.parametrize("path", ["/jobpoller/polls", "/jobpoller/jobs"])
@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"limit": MAX_PAGE_SIZE + 1}, ["query", "limit"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"limit": "ten"}, ["query", "limit"]),
    ],
    ids=["over-max-page-size", "zero", "negative-offset", "not-a-number"],
)
def test_a_page_request_out_of_range_answers_422(
    refusing_api: Api, path: str, params: dict[str, Any], location: list[str]
) -> None:
    body = assert_error(refusing_api.client.get(path, params=params), 422, "validation_error")
    assert body["errors"][0]["loc"] == location


def test_an_unknown_state_filter_answers_422(refusing_api: Api) -> None:
    response = refusing_api.client.get("/jobpoller/polls", params={"state": "sleeping"})
    assert_error(response, 422, "validation_error")


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "content", "headers"),
    [
        ("/jobpoller/polls", b"{not json", JSON),
        ("/jobpoller/polls", b"\xc3\x28 not utf-8", JSON),
        ("/jobpoller/polls", b"[" * 100_000, JSON),
        ("/jobpoller/polls", b"", JSON),
        ("/jobpoller/polls", b"null", JSON),
        ("/jobpoller/polls", b'["never_finishes"]', JSON),
        ("/jobpoller/polls", b'{"function": 5}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes", "arguments": []}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes", "interval": "soon"}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes", "colour": "red"}', JSON),
        ("/jobpoller/polls", b'{"function": "never_finishes"}', {"content-type": "text/plain"}),
        ("/jobpoller/jobs", b'{"function": "record"}', JSON),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": {"hours": 1}}', JSON),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": {"type": "weekly"}}', JSON),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": "daily"}', JSON),
        (
            "/jobpoller/jobs",
            b'{"function": "record", "trigger": {"type": "date", "run_date": "tomorrow"}}',
            JSON,
        ),
        (
            "/jobpoller/jobs",
            b'{"function": "record", "trigger": {"type": "cron", "expression": "0 * * * *",'
            b' "hour": 3}}',
            JSON,
        ),
        ("/jobpoller/jobs", b'{"function": "record", "trigger": {"type": "date"}, "x": 1}', JSON),
    ],
)
def test_a_malformed_body_answers_422_never_500(
    refusing_api: Api, path: str, content: bytes, headers: dict[str, str]
) -> None:
    response = refusing_api.client.post(path, content=content, headers=headers)
    body = assert_error(response, 422, "validation_error")
    assert body["errors"]
    assert refusing_api.client.get(path).json()["items"] == []


def test_a_malformed_patch_body_answers_422(api: Api) -> None:
    add_job(api, id="patched", function="record", trigger={"type": "interval", "hours": 1})
    for content in (b"{", b'{"max_instances": 0}', b'{"trigger": {"type": "x"}}', b'{"id": "z"}'):
        response = api.client.patch("/jobpoller/jobs/patched", content=content, headers=JSON)
        assert_error(response, 422, "validation_error")


def test_ids_with_a_nul_character_answer_422(any_db_api: Api) -> None:
    lookup = any_db_api.client.get("/jobpoller/polls/a%00b")
    assert_error(lookup, 422, "validation_error")
    listed = any_db_api.client.get("/jobpoller/jobs", params={"function": "a\x00b"})
    assert_error(listed, 422, "validation_error")
    poll = any_db_api.client.post(
        "/jobpoller/polls",
        json={"id": "a\x00b", "function": "never_finishes", "arguments": {"ticket": "n"}},
    )
    assert_error(poll, 422, "invalid_arguments")
    job = any_db_api.client.post(
        "/jobpoller/jobs", json={"id": "a\x00b", "function": "record", "trigger": {"type": "date"}}
    )
    assert_error(job, 422, "invalid_arguments")


def test_an_id_with_a_slash_is_refused_as_no_path_could_name_it(api: Api) -> None:
    poll = api.client.post(
        "/jobpoller/polls",
        json={"id": "orders/42", "function": "never_finishes", "arguments": {"ticket": "s"}},
    )
    assert assert_error(poll, 422, "validation_error")["errors"][0]["loc"] == ["body", "id"]
    job = api.client.post(
        "/jobpoller/jobs", json={"id": "a/b", "function": "record", "trigger": {"type": "date"}}
    )
    assert_error(job, 422, "validation_error")


def test_arguments_holding_a_lone_surrogate_answer_422(any_db_api: Api) -> None:
    # Valid JSON, but no database can store "\ud800" as UTF-8.
    content = b'{"function": "never_finishes", "arguments": {"ticket": "\\ud800"}}'
    response = any_db_api.client.post("/jobpoller/polls", content=content, headers=JSON)
    assert_error(response, 422, "invalid_arguments")


def test_a_poll_whose_function_returns_what_no_database_stores_fails_cleanly(
    any_db_api: Api,
) -> None:
    for kind in ("nan", "infinity", "surrogate"):
        start_poll(
            any_db_api,
            id=f"bad-{kind}",
            function="reports_the_unstorable",
            arguments={"kind": kind},
            max_errors=0,
        )
        poll = wait_until_ended(any_db_api, f"bad-{kind}")
        assert poll["state"] == "failed", poll
        assert "not JSON" in poll["error"]
    listed = any_db_api.client.get(
        "/jobpoller/polls", params={"function": "reports_the_unstorable"}
    )
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 3
