"""Prometheus metrics at `/metrics`: exact counts after a known workload, and auth.

The workload is chosen so that every count is known in advance (N polls of K attempts,
so many runs that succeed and fail); what depends on timing (ticks recorded as missed)
is checked against the stored job runs instead.
"""

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fastapi_jobpoller import (
    Done,
    Failed,
    IntervalTrigger,
    JobPoller,
    JobRunState,
    Pending,
    PollInfo,
    mount_scheduler,
)
from tests.conftest import PollerFactory
from tests.helpers import FAR_FUTURE, QUIET, WAIT, sqlite_only, wait_until

API_KEY = "metrics-tests-admin-key-001"
ADMIN = {"X-API-Key": API_KEY}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Map (sample name, labels) to value, for every sample of the exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Api:
    client: TestClient
    poller: JobPoller

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        portal = self.client.portal
        assert portal is not None
        return portal.call(lambda: function(*args, **kwargs))

    def scrape(self, headers: dict[str, str] = ADMIN) -> Samples:
        response = self.client.get("/jobpoller/metrics", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    def scrape_until(
        self, expected: dict[tuple[str, frozenset[tuple[str, str]]], float]
    ) -> Samples:
        """Scrape until the samples hold the expected values; then check they stay put."""
        give_up_at = time.monotonic() + WAIT
        while True:
            samples = self.scrape()
            seen = {key: samples.get(key, 0.0) for key in expected}
            if seen == expected or time.monotonic() > give_up_at:
                break
            time.sleep(0.05)
        assert seen == expected
        # Once reached, the counts must stay put.
        time.sleep(QUIET)
        samples = self.scrape()
        assert {key: samples.get(key, 0.0) for key in expected} == expected
        return samples


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


@pytest.fixture
def api(make_poller: PollerFactory) -> Iterator[Api]:
    poller = make_poller(
        api_key=API_KEY,
        metrics_enabled=True,
        attempt_history="all",
        callback_retry_seconds=0.05,
    )
    calls: Counter[str] = Counter()

    @poller.poll_function()
    def steps(key: str, finish_after: int) -> Pending | Done:
        calls[key] += 1
        return Done() if calls[key] >= finish_after else Pending(progress=calls[key])

    @poller.poll_function()
    def raises_once(key: str) -> Done:
        calls[key] += 1
        if calls[key] == 1:
            raise ConnectionError("status service unreachable")
        return Done()

    @poller.poll_function()
    def refuses() -> Failed:
        return Failed(reason="refused")

    @poller.callback()
    def notify(poll: PollInfo) -> None:
        calls[f"notify-{poll.id}"] += 1
        if calls[f"notify-{poll.id}"] == 1:
            raise RuntimeError("webhook down")

    @poller.job_function()
    async def report(fail: bool) -> str:
        if fail:
            raise RuntimeError("report failed")
        return "ok"

    app = FastAPI()
    mount_scheduler(app, poller)
    with TestClient(app) as client:
        yield Api(client, poller)


def test_the_metrics_count_a_known_workload_exactly(api: Api) -> None:
    polls, attempts = 4, 3
    poller = api.poller
    for n in range(polls):
        api.call(
            poller.start_poll, "steps", {"key": f"s{n}", "finish_after": attempts}, interval=0.01
        )
    for n in range(2):
        api.call(poller.start_poll, "raises_once", {"key": f"r{n}"}, interval=0.01)
    api.call(poller.start_poll, "refuses", callbacks=["notify"], poll_id="refused")
    api.call(poller.start_poll, "refuses", poll_id="waiting", delay=3600)
    api.call(poller.add_job, "report", FAR_FUTURE, arguments={"fail": False}, job_id="good")
    api.call(poller.add_job, "report", FAR_FUTURE, arguments={"fail": True}, job_id="bad")
    for job_id in ["good"] * 3 + ["bad"] * 2:
        api.call(poller.run_job_now, job_id)

    def settled() -> bool:
        counts = api.call(poller.count_polls_by_state)
        runs = api.call(poller.list_job_runs, limit=100)
        refused = api.call(poller.get_poll, "refused")
        return (
            counts["succeeded"] == polls + 2
            and counts["failed"] == 1
            and not refused.callbacks_pending
            and all(r.finished_at is not None for r in runs)
            and len(runs) == 5
        )

    wait_until(settled, "the workload finished")
    attempt_outcomes = Counter(a.outcome for a in api.call(poller.list_poll_attempts, limit=100))
    samples = api.scrape_until(
        {
            series("jobpoller_poll_attempts_total", function="steps", outcome="pending"): polls
            * (attempts - 1),
            series("jobpoller_poll_attempts_total", function="steps", outcome="succeeded"): polls,
            series("jobpoller_poll_attempts_total", function="raises_once", outcome="error"): 2,
            series("jobpoller_poll_attempts_total", function="raises_once", outcome="succeeded"): 2,
            series("jobpoller_poll_attempts_total", function="refuses", outcome="failed"): 1,
            series("jobpoller_job_runs_total", function="report", outcome="executed"): 3,
            series("jobpoller_job_runs_total", function="report", outcome="error"): 2,
            series("jobpoller_callback_failures_total", callback="notify"): 1,
            series("jobpoller_duration_seconds_count", kind="poll", function="steps"): polls
            * attempts,
            series("jobpoller_duration_seconds_count", kind="poll", function="raises_once"): 4,
            series("jobpoller_duration_seconds_count", kind="poll", function="refuses"): 1,
            series("jobpoller_duration_seconds_count", kind="job", function="report"): 5,
            series("jobpoller_lateness_seconds_count", kind="poll"): polls * attempts + 5,
            series("jobpoller_lateness_seconds_count", kind="job"): 5,
            series("jobpoller_polls", state="succeeded"): polls + 2,
            series("jobpoller_polls", state="failed"): 1,
            series("jobpoller_polls", state="pending"): 1,
            series("jobpoller_polls", state="running"): 0,
            series("jobpoller_polls", state="cancelled"): 0,
            series("jobpoller_polls", state="timed_out"): 0,
            series("jobpoller_leases_held"): 0,
            series("jobpoller_threads_stuck"): 0,
            series("jobpoller_quarantined_rows"): 0,
            series("jobpoller_failed_cycles"): 0,
        }
    )
    # Every attempt counted once, by the outcome its history row records.
    counted = Counter[str]()
    for (name, labels), count in samples.items():
        if name == "jobpoller_poll_attempts_total":
            counted[dict(labels)["outcome"]] += int(count)
    assert counted == attempt_outcomes
    unknown = (
        {n for n, _ in samples}
        - {
            f"jobpoller_{stem}{suffix}"
            for stem in ("poll_attempts", "job_runs", "callback_failures")
            for suffix in ("_total", "_created")
        }
        - {
            f"jobpoller_{stem}_{suffix}"
            for stem in ("duration_seconds", "lateness_seconds")
            for suffix in ("count", "sum", "bucket", "created")
        }
    )
    assert unknown == {
        "jobpoller_polls",
        "jobpoller_leases_held",
        "jobpoller_threads_stuck",
        "jobpoller_quarantined_rows",
        "jobpoller_failed_cycles",
    }


@sqlite_only
def test_ticks_recorded_as_missed_or_over_max_instances_are_counted_once_each(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(api_key=API_KEY, metrics_enabled=True)

    @poller.job_function()
    async def lingers() -> None:
        await asyncio.sleep(0.3)

    app = FastAPI()
    mount_scheduler(app, poller)
    with TestClient(app) as client:
        api = Api(client, poller)
        every = IntervalTrigger(seconds=0.05)
        api.call(poller.add_job, "lingers", every, job_id="late", misfire_grace_time=0)
        api.call(poller.add_job, "lingers", every, job_id="busy", max_instances=1)

        def states() -> Counter[JobRunState]:
            return Counter(r.state for r in api.call(poller.list_job_runs, limit=1000))

        wait_until(
            lambda: states()[JobRunState.MISSED] >= 2 and states()[JobRunState.SKIPPED] >= 2,
            "ticks were missed and skipped",
        )
        api.call(poller.pause_job, "late")
        api.call(poller.pause_job, "busy")
        wait_until(lambda: not states()[JobRunState.RUNNING], "the last runs ended")
        final = states()
        api.scrape_until(
            {
                series("jobpoller_job_runs_total", function="lingers", outcome="missed"): final[
                    JobRunState.MISSED
                ],
                series(
                    "jobpoller_job_runs_total", function="lingers", outcome="max_instances"
                ): final[JobRunState.SKIPPED],
                series("jobpoller_job_runs_total", function="lingers", outcome="executed"): final[
                    JobRunState.SUCCEEDED
                ],
                series("jobpoller_lateness_seconds_count", kind="job"): final[
                    JobRunState.SUCCEEDED
                ],
            }
        )


@sqlite_only
def test_a_poll_that_times_out_before_an_attempt_counts_no_attempt(api: Api) -> None:
    poller = api.poller
    api.call(poller.start_poll, "steps", {"key": "t", "finish_after": 1}, delay=0.2, timeout=0.1)
    wait_until(
        lambda: api.call(poller.count_polls_by_state)["timed_out"] == 1, "the poll timed out"
    )
    samples = api.scrape_until({series("jobpoller_polls", state="timed_out"): 1})
    assert [key for key in samples if key[0] == "jobpoller_poll_attempts_total"] == []
    assert api.call(poller.get_poll, api.call(poller.list_polls)[0].id).attempts == 0


@sqlite_only
def test_the_leases_gauge_counts_the_work_this_process_holds(make_poller: PollerFactory) -> None:
    poller = make_poller(api_key=API_KEY, metrics_enabled=True)
    release = threading.Event()

    @poller.job_function()
    def blocks() -> None:
        release.wait(WAIT)

    app = FastAPI()
    mount_scheduler(app, poller)
    with TestClient(app) as client:
        api = Api(client, poller)
        try:
            api.call(poller.add_job, "blocks", FAR_FUTURE, job_id="j")
            api.call(poller.run_job_now, "j")
            api.call(poller.run_job_now, "j")
            api.scrape_until({series("jobpoller_leases_held"): 2})
        finally:
            release.set()
        api.scrape_until({series("jobpoller_leases_held"): 0})


@sqlite_only
@pytest.mark.parametrize(
    ("settings", "anonymous_status"),
    [
        ({"metrics_enabled": True}, 401),
        ({"metrics_enabled": True, "metrics_public": True}, 200),
        ({"metrics_enabled": False}, 404),
    ],
    ids=["protected", "public", "disabled"],
)
def test_the_metrics_endpoint_is_protected_like_the_other_routes_unless_made_public(
    make_poller: PollerFactory, settings: dict[str, bool], anonymous_status: int
) -> None:
    poller = make_poller(api_key=API_KEY, **settings)
    app = FastAPI()
    mount_scheduler(app, poller)
    with TestClient(app) as client:
        anonymous = client.get("/jobpoller/metrics")
        admin = client.get("/jobpoller/metrics", headers=ADMIN)
    assert anonymous.status_code == anonymous_status
    assert admin.status_code == (404 if anonymous_status == 404 else 200)
    if admin.status_code == 200:
        assert value(parse(admin.text), "jobpoller_polls", state="pending") == 0
        assert "jobpoller_poll_attempts" in admin.text
