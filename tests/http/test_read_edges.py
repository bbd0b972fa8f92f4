"""Bad parameters of the read routes and of new ids are refused with a 422 naming the
field, never a 500: a NUL where PostgreSQL refuses one, times past the calendar's ends,
numbers where a time is due, and ids that would forge or disguise log lines."""

import pytest

from fastapi_jobpoller import InvalidArgumentsError
from tests.helpers import FAR_FUTURE_ISO, Api, assert_error, start_poll


def test_an_outcome_filter_takes_only_the_outcomes_there_are(any_db_api: Api) -> None:
    api = any_db_api
    poll = start_poll(api, function="never_finishes", arguments={"ticket": "t"}, delay=3600)
    path = f"/jobpoller/polls/{poll['id']}/attempts"
    for outcome in ("\x00", "done", "pending\x00"):
        body = assert_error(
            api.client.get(path, params={"outcome": outcome}), 422, "validation_error"
        )
        assert "outcome" in body["detail"]
    assert api.client.get(path, params={"outcome": "error"}).status_code == 200


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("bound", ["since", "until"])
def test_a_time_with_no_utc_equivalent_is_refused(any_db_api: Api, bound: str, moment: str) -> None:
    api = any_db_api
    poll = start_poll(api, function="never_finishes", arguments={"ticket": "t"}, delay=3600)
    for path in ("/jobpoller/runs", f"/jobpoller/polls/{poll['id']}/attempts"):
        body = assert_error(api.client.get(path, params={bound: moment}), 422, "invalid_arguments")
        assert bound in body["detail"], body


@pytest.mark.parametrize("value", ["0.5", "1700000000", "-3", "1e9"])
def test_a_number_is_not_taken_for_a_time(api: Api, value: str) -> None:
    body = assert_error(
        api.client.get("/jobpoller/runs", params={"until": value}), 422, "validation_error"
    )
    assert "until" in body["detail"] and "ISO 8601" in body["detail"]
    assert api.client.get("/jobpoller/runs", params={"until": FAR_FUTURE_ISO}).status_code == 200


@pytest.mark.parametrize("poll_id", ["a\nb", "a\rb", "a\u202eb", "tab\there", "a\u2066b"])
def test_an_id_that_could_forge_or_disguise_a_log_line_is_refused(api: Api, poll_id: str) -> None:
    response = api.client.post(
        "/jobpoller/polls",
        json={"function": "never_finishes", "arguments": {"ticket": "t"}, "id": poll_id},
    )
    assert "control characters" in assert_error(response, 422, "invalid_arguments")["detail"]
    job = api.client.post(
        "/jobpoller/jobs",
        json={"function": "cleanup", "trigger": {"type": "interval", "hours": 1}, "id": poll_id},
    )
    assert_error(job, 422, "invalid_arguments")


def test_check_id_refuses_control_characters_and_keeps_the_rest() -> None:
    from fastapi_jobpoller._poller_base import check_id

    assert check_id("poll", "order-42/é-日本") == "order-42/é-日本"
    with pytest.raises(InvalidArgumentsError):
        check_id("poll", "order\x0042")
