"""Run history: one record per job run, recorded poll attempts, retention, and the
queries over them, from Python and over HTTP.

Retention is tested on rows written straight into the tables at chosen times, so that
"older than a week" needs no week; one test shows the engine prunes by itself.
"""

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_jobpoller import (
    Done,
    Event,
    EventType,
    InvalidArgumentsError,
    JobPoller,
    JobRunState,
    Pending,
    PollNotFoundError,
    mount_scheduler,
)
from fastapi_jobpoller._storage.database import Database
from fastapi_jobpoller._storage.history_store import HistoryStore, PruneReport, Retention
from fastapi_jobpoller._storage.run_store import RunStore
from tests.conftest import PollerFactory
from tests.helpers import FAR_FUTURE, WAIT, ended, runs_finished, sqlite_only, stored_poll

pytestmark = pytest.mark.anyio

API_KEY = "history-tests-admin-key-01"
READ_KEY = "history-tests-read-key-002"


# -- job run records -----------------------------------------------------------------------


async def test_a_run_record_holds_its_real_start_finish_outcome_result_and_traceback(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.job_function()
    async def takes_a_while(seconds: float) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @poller.job_function()
    def breaks() -> None:
        raise ValueError("the report server refused")

    async with poller:
        await poller.add_job("takes_a_while", FAR_FUTURE, arguments={"seconds": 0.1}, job_id="ok")
        await poller.add_job("breaks", FAR_FUTURE, job_id="bad")
        before = datetime.now(UTC)
        queued = await poller.run_job_now("ok")
        await poller.run_job_now("bad")
        await runs_finished(poller, "ok", 1)
        await runs_finished(poller, "bad", 1)
        (ok,) = await poller.list_job_runs(job_id="ok")
        (bad,) = await poller.list_job_runs(job_id="bad")
        assert await poller.get_job_run(ok.id) == ok

    assert ok.id == queued.id and queued.state is JobRunState.QUEUED
    assert ok.state is JobRunState.SUCCEEDED and ok.result == {"slept": 0.1}
    assert ok.started_at is not None and ok.finished_at is not None
    assert before <= ok.scheduled_at <= ok.started_at
    assert ok.finished_at - ok.started_at >= timedelta(seconds=0.1)
    assert (ok.error, ok.traceback, ok.worker, ok.attempt) == (None, None, poller.worker_id, 1)
    assert bad.state is JobRunState.FAILED and bad.result is None
    assert bad.error == "ValueError: the report server refused"
    assert bad.traceback is not None
    assert "in breaks" in bad.traceback and "ValueError: the report server refused" in bad.traceback


async def test_a_late_outcome_from_a_lost_lease_neither_duplicates_nor_overwrites_the_run(
    make_poller: PollerFactory, database_url: str, table_prefix: str
) -> None:
    """The run's lease passes to another process while the first still runs it; that
    process records its outcome first, and the first one's late outcome changes nothing."""
    poller = make_poller()
    entered, release = asyncio.Event(), asyncio.Event()
    reported: list[Event] = []

    @poller.job_function()
    async def blocks() -> str:
        entered.set()
        await release.wait()
        return "late"

    poller.add_listener(reported.append, EventType.JOB_EXECUTED, EventType.JOB_ERROR)
    database = Database(database_url, table_prefix=table_prefix)
    runs = database.tables.job_runs
    other = RunStore(database, default_zone="UTC")
    try:
        async with poller:
            await poller.add_job("blocks", FAR_FUTURE, job_id="j")
            run = await poller.run_job_now("j")
            with anyio.fail_after(WAIT):
                await entered.wait()
            # Another process takes the run over, as after an expired lease.
            taken = {
                "worker": "other-process",
                "attempt": 2,
                "due_at": datetime.now(UTC) + timedelta(hours=1),
            }
            with database.transaction() as connection:
                connection.execute(sa.update(runs).where(runs.c.id == run.id).values(**taken))
            row = await anyio.to_thread.run_sync(other.get_run, run.id)
            assert row is not None
            landed = await anyio.to_thread.run_sync(
                lambda: other.finish_run(
                    row,
                    worker="other-process",
                    state=JobRunState.SUCCEEDED,
                    result="on time",
                    error=None,
                    now=datetime.now(UTC),
                )
            )
            assert landed
            release.set()
            with anyio.fail_after(WAIT):
                while True:
                    if not poller.in_flight:
                        break
                    await anyio.sleep(0.01)
            stored = await poller.list_job_runs(job_id="j")
    finally:
        database.dispose()

    assert [(r.id, r.state, r.result, r.worker, r.attempt) for r in stored] == [
        (run.id, JobRunState.SUCCEEDED, "on time", "other-process", 2)
    ]
    assert reported == [], "the process that lost the run reported an outcome for it"


# -- poll attempt history ------------------------------------------------------------------


def register_story(poller: JobPoller) -> None:
    """A poll function that reports 'a', 'a', 'b', raises once, then succeeds."""
    calls: dict[str, int] = {}

    @poller.poll_function()
    def story(key: str) -> Pending | Done:
        calls[key] = number = calls.get(key, 0) + 1
        if number in (1, 2):
            return Pending(progress="a")
        if number == 3:
            return Pending(progress="b")
        if number == 4:
            raise ConnectionError("status service unreachable")
        return Done(result="done")


async def test_every_attempt_is_recorded_when_attempt_history_is_all(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(attempt_history="all")
    register_story(poller)
    async with poller:
        await poller.start_poll("story", {"key": "s"}, poll_id="s", interval=0.01)
        await ended(poller, "s")
        attempts = await poller.list_poll_attempts(poll_id="s")

    assert [(a.attempt, a.outcome, a.progress) for a in attempts] == [
        (5, "succeeded", "b"),
        (4, "error", "b"),
        (3, "pending", "b"),
        (2, "pending", "a"),
        (1, "pending", "a"),
    ]
    for attempt in attempts:
        assert (attempt.poll_id, attempt.function, attempt.worker) == (
            "s",
            "story",
            poller.worker_id,
        )
        assert attempt.started_at <= attempt.finished_at
    error = attempts[1]
    assert error.error == "ConnectionError: status service unreachable"
    assert error.traceback is not None and "ConnectionError" in error.traceback
    assert all(a.error is None and a.traceback is None for a in attempts if a is not error)


@sqlite_only
@pytest.mark.parametrize(
    ("mode", "recorded"), [("transitions", [5, 4, 3, 1]), ("none", [])], ids=["transitions", "none"]
)
async def test_attempt_history_transitions_keeps_changes_errors_and_ends_and_none_keeps_nothing(
    make_poller: PollerFactory, mode: str, recorded: list[int]
) -> None:
    poller = make_poller(attempt_history=mode)
    register_story(poller)
    async with poller:
        await poller.start_poll("story", {"key": "s"}, poll_id="s", interval=0.01)
        assert (await ended(poller, "s")).attempts == 5
        attempts = await poller.list_poll_attempts(poll_id="s")

    assert [a.attempt for a in attempts] == recorded


# -- retention -----------------------------------------------------------------------------

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
KEEP_ALL = Retention(
    max_age_seconds=None,
    max_runs_per_job=None,
    max_attempts_per_poll=None,
    finished_poll_max_age_seconds=None,
)


@dataclass
class Tables:
    """The library's tables on the test database, filled by hand."""

    database: Database
    store: HistoryStore

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        with self.database.transaction() as connection:
            connection.execute(sa.insert(table), rows)

    def ids(self, table: sa.Table) -> set[str]:
        with self.database.transaction(read_only=True) as connection:
            return set(connection.execute(sa.select(table.c.id)).scalars())

    def prune(self, **limits: Any) -> PruneReport:
        return self.store.prune(dataclasses.replace(KEEP_ALL, **limits), now=NOW)


@pytest.fixture
def tables(database_url: str, table_prefix: str) -> Iterator[Tables]:
    database = Database(database_url, table_prefix=table_prefix)
    database.create_schema()
    try:
        yield Tables(database, HistoryStore(database))
    finally:
        database.dispose()


def run_row(run_id: str, job_id: str, *, ago: float, state: str = "succeeded") -> dict[str, Any]:
    """A job run scheduled `ago` seconds before NOW; finished one second later if ended."""
    scheduled = NOW - timedelta(seconds=ago)
    unfinished = state in ("running", "queued")
    return {
        "id": run_id,
        "job_id": job_id,
        "function": "f",
        "arguments": {},
        "scheduled_at": scheduled,
        "state": state,
        "attempt": 1,
        "due_at": NOW + timedelta(seconds=30) if unfinished else None,
        "worker": "w",
        "started_at": None if state == "queued" else scheduled,
        "finished_at": None if unfinished else scheduled + timedelta(seconds=1),
        "result": None,
        "error": None,
        "traceback": None,
    }


def attempt_row(poll_id: str, attempt: int, *, ago: float) -> dict[str, Any]:
    finished = NOW - timedelta(seconds=ago)
    return {
        "id": f"{poll_id}-{attempt}",
        "poll_id": poll_id,
        "function": "f",
        "attempt": attempt,
        "worker": "w",
        "started_at": finished - timedelta(seconds=0.5),
        "finished_at": finished,
        "outcome": "pending",
        "progress": None,
        "error": None,
        "traceback": None,
    }


def poll_row(
    poll_id: str, state: str, *, ago: float, callbacks_pending: bool = False
) -> dict[str, Any]:
    moment = NOW - timedelta(seconds=ago)
    ended_ = state not in ("pending", "running")
    return stored_poll(
        poll_id,
        state=state,
        attempts=1,
        callbacks=["cb"] if callbacks_pending else [],
        callbacks_pending=callbacks_pending,
        created_at=moment - timedelta(seconds=10),
        next_poll_at=moment if not ended_ or callbacks_pending else None,
        finished_at=moment if ended_ else None,
        updated_at=moment,
    )


DAY = 86_400.0


def test_pruning_by_age_deletes_only_ended_history_older_than_the_limit(tables: Tables) -> None:
    runs, attempts = tables.database.tables.job_runs, tables.database.tables.poll_attempts
    tables.insert(
        runs,
        [
            run_row("old-ok", "j", ago=9 * DAY),
            run_row("old-failed", "j", ago=8 * DAY, state="failed"),
            run_row("old-missed", "j", ago=8 * DAY + 5, state="missed"),
            run_row("new-ok", "j", ago=6 * DAY),
            run_row("old-running", "j", ago=30 * DAY, state="running"),
            run_row("old-queued", "k", ago=30 * DAY, state="queued"),
        ],
    )
    tables.insert(
        attempts,
        [
            attempt_row("p", 1, ago=8 * DAY),
            attempt_row("p", 2, ago=6 * DAY),
            attempt_row("q", 1, ago=7 * DAY + 60),
        ],
    )

    assert tables.prune() == PruneReport(job_runs=0, poll_attempts=0, polls=0)
    report = tables.prune(max_age_seconds=7 * DAY)

    assert report == PruneReport(job_runs=3, poll_attempts=2, polls=0)
    assert tables.ids(runs) == {"new-ok", "old-running", "old-queued"}
    assert tables.ids(attempts) == {"p-2"}
    assert tables.prune(max_age_seconds=7 * DAY) == PruneReport(
        job_runs=0, poll_attempts=0, polls=0
    )


def test_pruning_by_count_keeps_the_newest_runs_of_each_job_and_every_unfinished_one(
    tables: Tables,
) -> None:
    runs = tables.database.tables.job_runs
    crowded = [run_row(f"a{n}", "a", ago=100 - n) for n in range(10)]  # a9 is the newest
    crowded[1] = run_row("a1", "a", ago=99, state="running")  # its process died long ago
    crowded[2] = run_row("a2", "a", ago=98, state="queued")
    tables.insert(runs, [*crowded, *(run_row(f"b{n}", "b", ago=50 - n) for n in range(3))])

    report = tables.prune(max_runs_per_job=3)

    assert tables.ids(runs) == {"a1", "a2", "a7", "a8", "a9", "b0", "b1", "b2"}
    assert report == PruneReport(job_runs=5, poll_attempts=0, polls=0)


def test_pruning_by_count_keeps_the_newest_attempts_of_each_poll(tables: Tables) -> None:
    attempts = tables.database.tables.poll_attempts
    tables.insert(
        attempts,
        [
            *(attempt_row("p", n, ago=100 - n) for n in range(1, 8)),
            *(attempt_row("q", n, ago=10 - n) for n in (2, 5)),
        ],
    )

    report = tables.prune(max_attempts_per_poll=2)

    assert tables.ids(attempts) == {"p-6", "p-7", "q-2", "q-5"}
    assert report == PruneReport(job_runs=0, poll_attempts=5, polls=0)


def test_pruning_deletes_ended_polls_whose_callbacks_ran_once_old_enough(tables: Tables) -> None:
    polls = tables.database.tables.polls
    tables.insert(
        polls,
        [
            poll_row("old-succeeded", "succeeded", ago=31 * DAY),
            poll_row("old-failed", "failed", ago=40 * DAY),
            poll_row("old-timed-out", "timed_out", ago=35 * DAY),
            poll_row("old-cancelled", "cancelled", ago=31 * DAY),
            poll_row("old-callbacks-pending", "succeeded", ago=31 * DAY, callbacks_pending=True),
            poll_row("new-succeeded", "succeeded", ago=29 * DAY),
            poll_row("old-pending", "pending", ago=90 * DAY),
            poll_row("old-running", "running", ago=90 * DAY),
        ],
    )

    report = tables.prune(finished_poll_max_age_seconds=30 * DAY)

    assert report == PruneReport(job_runs=0, poll_attempts=0, polls=4)
    assert tables.ids(polls) == {
        "old-callbacks-pending",
        "new-succeeded",
        "old-pending",
        "old-running",
    }


def test_a_pruned_poll_takes_its_recorded_attempts_with_it(tables: Tables) -> None:
    polls, attempts = tables.database.tables.polls, tables.database.tables.poll_attempts
    tables.insert(
        polls,
        [poll_row("gone", "succeeded", ago=31 * DAY), poll_row("kept", "pending", ago=31 * DAY)],
    )
    tables.insert(
        attempts, [attempt_row("gone", 1, ago=31 * DAY), attempt_row("kept", 1, ago=31 * DAY)]
    )

    tables.prune(finished_poll_max_age_seconds=30 * DAY)

    assert tables.ids(polls) == {"kept"}
    assert tables.ids(attempts) == {"kept-1"}


@sqlite_only
async def test_the_engine_prunes_history_in_the_background(make_poller: PollerFactory) -> None:
    poller = make_poller(
        attempt_history="all",
        prune_interval_seconds=0.05,
        history_max_attempts_per_poll=2,
        history_max_runs_per_job=3,
        finished_poll_max_age_seconds=0.3,
    )
    register_story(poller)
    ran = 0

    @poller.job_function()
    async def count() -> int:  # on the event loop: runs count up in the order they start
        nonlocal ran
        ran += 1
        return ran

    async with poller:
        await poller.add_job("count", FAR_FUTURE, job_id="j")
        for _ in range(6):
            await poller.run_job_now("j")
        await poller.start_poll("story", {"key": "s"}, poll_id="s", interval=0.01)
        await ended(poller, "s")
        with anyio.fail_after(WAIT):
            while True:
                attempts = await poller.list_poll_attempts(poll_id="s")
                runs = await poller.list_job_runs(job_id="j")
                if ran == 6 and len(attempts) == 2 and len(runs) == 3:
                    break
                await anyio.sleep(0.02)
        assert [a.attempt for a in attempts] == [5, 4]
        assert sorted(r.result for r in runs) == [4, 5, 6]
        with anyio.fail_after(WAIT):
            while True:
                try:
                    await poller.get_poll("s")
                except PollNotFoundError:
                    break
                await anyio.sleep(0.02)


# -- over HTTP ------------------------------------------------------------------------------

ADMIN = {"X-API-Key": API_KEY}


@dataclass
class Api:
    client: TestClient
    poller: JobPoller

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(f"/jobpoller{path}", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def api(make_poller: PollerFactory) -> Iterator[Api]:
    poller = make_poller(api_key=API_KEY, read_api_key=READ_KEY, attempt_history="all")
    register_story(poller)

    @poller.job_function()
    async def report(fail: bool) -> str:
        if fail:
            raise RuntimeError("report failed")
        return "reported"

    app = FastAPI()
    mount_scheduler(app, poller)
    with TestClient(app) as client:
        yield Api(client, poller)


def portal_call(api: Api, function: Any, *args: Any, **kwargs: Any) -> Any:
    portal = api.client.portal
    assert portal is not None
    return portal.call(lambda: function(*args, **kwargs))


def stamp(moment: datetime) -> str:
    return moment.isoformat()


def test_runs_are_listed_over_http_latest_first_filtered_by_job_state_and_time_and_paged(
    api: Api,
) -> None:
    poller = api.poller
    portal_call(api, poller.add_job, "report", FAR_FUTURE, arguments={"fail": False}, job_id="a")
    portal_call(api, poller.add_job, "report", FAR_FUTURE, arguments={"fail": True}, job_id="b")
    for job_id in ["a"] * 6 + ["b"] * 3:
        portal_call(api, poller.run_job_now, job_id)
    give_up_at = datetime.now(UTC) + timedelta(seconds=WAIT)
    while True:
        everything = api.get("/runs", limit=50)["items"]
        if all(r["finished_at"] for r in everything) or datetime.now(UTC) > give_up_at:
            break
        time.sleep(0.02)
    assert len(everything) == 9 and all(r["finished_at"] for r in everything)
    assert [r["scheduled_at"] for r in everything] == sorted(
        (r["scheduled_at"] for r in everything), reverse=True
    )

    of_a = api.get("/runs", job_id="a")["items"]
    assert [r["id"] for r in of_a] == [r["id"] for r in everything if r["job_id"] == "a"]
    assert {r["state"] for r in of_a} == {"succeeded"} and len(of_a) == 6
    failed = api.get("/runs", state="failed")["items"]
    assert {(r["job_id"], r["error"]) for r in failed} == {("b", "RuntimeError: report failed")}
    assert len(failed) == 3 and all("RuntimeError" in r["traceback"] for r in failed)
    both = api.client.get(
        "/jobpoller/runs", params=[("state", "failed"), ("state", "succeeded")], headers=ADMIN
    )
    assert len(both.json()["items"]) == 9
    assert api.get("/runs", job_id="b", state="succeeded")["items"] == []

    pages, offset = [], 0
    while offset is not None:
        page = api.get("/runs", job_id="a", limit=4, offset=offset)
        pages.append([r["id"] for r in page["items"]])
        offset = page["next_offset"]
    assert [len(p) for p in pages] == [4, 2]
    assert [run_id for p in pages for run_id in p] == [r["id"] for r in of_a]

    oldest_first = list(reversed(of_a))
    since, until = oldest_first[1]["scheduled_at"], oldest_first[4]["scheduled_at"]
    window = api.get("/runs", job_id="a", since=since, until=until)["items"]
    assert [r["id"] for r in window] == [r["id"] for r in reversed(oldest_first[1:4])]

    one = api.get(f"/runs/{failed[0]['id']}")
    assert one == failed[0]
    missing = api.client.get("/jobpoller/runs/no-such-run", headers=ADMIN)
    assert (missing.status_code, missing.json()["code"]) == (404, "job_not_found")


def test_a_polls_attempts_are_listed_over_http_filtered_by_outcome_and_time_and_paged(
    api: Api,
) -> None:
    poller = api.poller
    portal_call(api, poller.start_poll, "story", {"key": "s"}, poll_id="s", interval=0.01)
    give_up_at = datetime.now(UTC) + timedelta(seconds=WAIT)
    while api.get("/polls/s")["state"] != "succeeded" and datetime.now(UTC) < give_up_at:
        time.sleep(0.02)
    attempts = api.get("/polls/s/attempts")["items"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (5, "succeeded"),
        (4, "error"),
        (3, "pending"),
        (2, "pending"),
        (1, "pending"),
    ]

    pages, offset = [], 0
    while offset is not None:
        page = api.get("/polls/s/attempts", limit=2, offset=offset)
        pages.append([a["attempt"] for a in page["items"]])
        offset = page["next_offset"]
    assert pages == [[5, 4], [3, 2], [1]]

    errors = api.get("/polls/s/attempts", outcome="error")["items"]
    assert [(a["attempt"], a["error"]) for a in errors] == [
        (4, "ConnectionError: status service unreachable")
    ]
    ended_or_pending = api.client.get(
        "/jobpoller/polls/s/attempts",
        params=[("outcome", "succeeded"), ("outcome", "pending")],
        headers=ADMIN,
    ).json()["items"]
    assert [a["attempt"] for a in ended_or_pending] == [5, 3, 2, 1]
    since, until = attempts[2]["finished_at"], attempts[0]["finished_at"]
    window = api.get("/polls/s/attempts", since=since, until=until)["items"]
    assert [a["attempt"] for a in window] == [4, 3]

    missing = api.client.get("/jobpoller/polls/no-such-poll/attempts", headers=ADMIN)
    assert (missing.status_code, missing.json()["code"]) == (404, "poll_not_found")


@sqlite_only
def test_the_history_routes_answer_only_with_a_read_or_admin_key(api: Api) -> None:
    portal_call(api, api.poller.start_poll, "story", {"key": "s"}, poll_id="s", delay=60)
    for path in ("/jobpoller/runs", "/jobpoller/polls/s/attempts"):
        anonymous = api.client.get(path)
        wrong = api.client.get(path, headers={"X-API-Key": "not-the-key-at-all-000"})
        reader = api.client.get(path, headers={"X-API-Key": READ_KEY})
        admin = api.client.get(path, headers=ADMIN)
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "not_authenticated")
        assert wrong.status_code == 401
        assert reader.status_code == admin.status_code == 200


@sqlite_only
def test_a_time_filter_without_a_time_zone_is_refused_with_422(api: Api) -> None:
    for path in ("/jobpoller/runs", "/jobpoller/polls/s/attempts"):
        response = api.client.get(path, params={"since": "2030-01-01T00:00:00"}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"


@sqlite_only
async def test_a_time_filter_without_a_time_zone_raises_invalid_arguments(
    make_poller: PollerFactory,
) -> None:
    naive = datetime(2030, 1, 1)
    async with make_poller() as poller:
        with pytest.raises(InvalidArgumentsError, match="since needs a time zone"):
            await poller.list_job_runs(since=naive)
        with pytest.raises(InvalidArgumentsError, match="until needs a time zone"):
            await poller.list_poll_attempts(until=naive)
