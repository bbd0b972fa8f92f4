"""Rows edited behind the API's back never break its pages: each list and item answers
200, the bad values shown empty with a `problem`; `/quarantine` lists what the engine set
aside, and `/health` says so."""

from typing import Any

import sqlalchemy as sa

from tests.helpers import Api, add_job, change_rows, start_poll, wait_until


def listed_quarantine(api: Api, count: int) -> list[dict[str, Any]]:
    """Wait until `/quarantine` lists `count` rows, and return them."""

    def items() -> list[dict[str, Any]]:
        response = api.client.get("/jobpoller/quarantine")
        assert response.status_code == 200, response.text
        listed: list[dict[str, Any]] = response.json()["items"]
        return listed

    wait_until(lambda: len(items()) >= count, f"{count} rows set aside")
    return items()


def test_pages_answer_with_the_problem_instead_of_a_500(any_db_api: Api) -> None:
    api = any_db_api
    polls = api.poller._database.tables.polls  # type: ignore[union-attr]
    jobs = api.poller._database.tables.jobs  # type: ignore[union-attr]
    runs = api.poller._database.tables.job_runs  # type: ignore[union-attr]
    shapes = {"list": ["x"], "text": "x", "null": sa.JSON.NULL}
    ids = {}
    for name, value in shapes.items():
        poll = start_poll(api, function="never_finishes", arguments={"ticket": name}, delay=3600)
        change_rows(
            api.poller, sa.update(polls).where(polls.c.id == poll["id"]).values(arguments=value)
        )
        ids[name] = poll["id"]
    callbacks = start_poll(api, function="never_finishes", arguments={"ticket": "c"}, delay=3600)
    change_rows(
        api.poller, sa.update(polls).where(polls.c.id == callbacks["id"]).values(callbacks="abc")
    )
    job = add_job(api, function="cleanup", trigger={"type": "interval", "hours": 1}, id="j")
    change_rows(
        api.poller, sa.update(jobs).where(jobs.c.id == "j").values(trigger={"type": "weekly"})
    )
    run = api.client.post("/jobpoller/jobs/j/run").json()
    change_rows(api.poller, sa.update(runs).where(runs.c.id == run["id"]).values(arguments=["x"]))

    for path in ("/jobpoller/polls", "/jobpoller/jobs", "/jobpoller/runs", "/jobpoller/jobs/j"):
        assert api.client.get(path).status_code == 200, path
    for name, poll_id in ids.items():
        shown = api.client.get(f"/jobpoller/polls/{poll_id}")
        assert shown.status_code == 200, (name, shown.text)
        assert shown.json()["arguments"] == {} and "arguments" in shown.json()["problem"]
    shown_callbacks = api.client.get(f"/jobpoller/polls/{callbacks['id']}").json()
    assert shown_callbacks["callbacks"] == [] and "callbacks" in shown_callbacks["problem"]
    shown_job = api.client.get("/jobpoller/jobs/j").json()
    assert shown_job["trigger"] is None and "trigger" in shown_job["problem"]
    assert job["id"] == "j"


def test_the_engine_sets_bad_polls_aside_and_says_so_in_health(any_db_api: Api) -> None:
    api = any_db_api
    polls = api.poller._database.tables.polls  # type: ignore[union-attr]
    poll = start_poll(api, function="never_finishes", arguments={"ticket": "t"}, delay=3600)
    change_rows(
        api.poller,
        sa.update(polls)
        .where(polls.c.id == poll["id"])
        .values(arguments=["x"], next_poll_at=sa.func.current_timestamp()),
    )
    items = listed_quarantine(api, 1)
    assert [(item["kind"], item["id"]) for item in items] == [("poll", poll["id"])]
    assert "arguments" in items[0]["reason"]
    shown = api.client.get(f"/jobpoller/polls/{poll['id']}").json()
    assert (shown["state"], shown["next_poll_at"], shown["attempts"]) == ("pending", None, 0)
    assert shown["problem"].startswith(items[0]["reason"])
    health = api.client.get("/jobpoller/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded", body
    assert body["quarantined"] == 1 and any("set aside" in p for p in body["problems"]), body
    assert api.client.get("/jobpoller/quarantine", params={"kind": "job"}).json()["items"] == []
