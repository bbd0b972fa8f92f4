"""Many workers, many instances, one database: real uvicorn processes, kills and outages.

Every test here starts real processes: `python -m uvicorn tests.support.cluster_app:app` app
instances (with `--workers N`, uvicorn's supervisor starts and restarts the workers),
the fake external service those apps call (tests/support/cluster_service.py), and, for
PostgreSQL, a server of the test's own, so it can be stopped and restarted. Each test
checks two records against each other: the library's tables (with an audit trigger that
logs every claim of a poll and every re-run of a job run) and the service's own count of
the calls the functions made.
"""

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from tests.helpers import START_TIMEOUT, report, wait_until
from tests.support.cluster_audit import (
    PREFIX,
    RESUME_BOUND,
    TABLES,
    Kill,
    Outage,
    aware,
    by_key,
    check_jobs,
    check_outage_answers,
    check_polls,
    check_takeovers,
    install_audit,
    lease_snapshot,
    rows,
    wait_for_renewal,
)
from tests.support.cluster_support import (
    HEADERS,
    AppInstance,
    PostgresServer,
    Service,
    app_environment,
    error_body,
    postgres_server,
    sigkill,
)

pytestmark = [pytest.mark.processes, pytest.mark.cluster]

# Short leases so a killed worker's work is taken over within the test; the default is 30.
LEASE_SECONDS = 8.0
WORK_TIMEOUT = 120.0
POLLS = 400
# Longer than a lease, shorter than the test.
SLOW_SECONDS = 10.0
# Leases are renewed every third of a lease. The outage starts 0.6 of that period after
# a renewal and lasts 1.5 periods (4 s here): past the next two renewal times of that
# worker, and within what every worker's leases survive: two periods less half a second.
RENEWAL_PERIOD = LEASE_SECONDS / 3
OUTAGE_START = 0.6 * RENEWAL_PERIOD
OUTAGE_SECONDS = 1.5 * RENEWAL_PERIOD
JOBS = ("job-1", "job-2")
TICK_SECONDS = 0.5
SETTINGS: dict[str, object] = {
    "table_prefix": PREFIX,
    "lease_seconds": LEASE_SECONDS,
    "attempt_history": "all",
    "thread_pool_size": 16,
}


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, stopped and deleted afterwards."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """The fake external service; each call waits up to 0.6 s, like a real one."""
    started = Service(tmp_path / "service.log", max_delay=0.6)
    try:
        yield started
    finally:
        started.close()


StartApp = Callable[..., AppInstance]


@pytest.fixture
def start_app(tmp_path: Path, service: Service) -> Iterator[StartApp]:
    """Start app instances; each is killed, with all of its workers, at the end."""
    started: list[AppInstance] = []

    def start(name: str, *, workers: int, **settings: object) -> AppInstance:
        env = app_environment({**SETTINGS, **settings}, service.url)
        instance = AppInstance(name, workers=workers, env=env, log_path=tmp_path / f"{name}.log")
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.close()


def poll_request(poll_id: str, *, callbacks: bool, seconds: float | None = None) -> dict[str, Any]:
    """Return the body that starts a poll: three quick calls, or one taking `seconds`."""
    arguments = {"key": poll_id, "finish_after": 3 if seconds is None else 1, "seconds": seconds}
    return {
        "function": "check_status",
        "arguments": arguments,
        "id": poll_id,
        "interval": 0.2,
        "callbacks": ["record_callback"] if callbacks else [],
    }


class Submitter(threading.Thread):
    """Submits polls over HTTP in waves, like clients that retry on 503 with the same id.

    While `hold` is set it waits: the test holds it around the database's return, so that
    no submit wakes an engine and the engines' own recovery is what gets measured.
    """

    def __init__(self, ports: list[int], bodies: list[dict[str, Any]], *, waves: int) -> None:
        super().__init__(daemon=True)
        self._ports = ports
        self._waves = [bodies[i::waves] for i in range(waves)]
        self.hold = threading.Event()
        self.acknowledged: dict[str, float] = {}
        self.refusals: Counter[str] = Counter()
        self.give_up_at = time.monotonic() + WORK_TIMEOUT

    def run(self) -> None:
        clients = [
            httpx2.Client(base_url=f"http://127.0.0.1:{port}/jobpoller", headers=HEADERS)
            for port in self._ports
        ]
        try:
            for wave in self._waves:
                for number, body in enumerate(wave):
                    self._submit(clients[number % len(clients)], body)
                time.sleep(1.0)
        finally:
            for client in clients:
                client.close()

    def _submit(self, client: httpx2.Client, body: dict[str, Any]) -> None:
        while time.monotonic() < self.give_up_at:
            if self.hold.is_set():
                time.sleep(0.05)
                continue
            try:
                response = client.post("/polls", json=body, timeout=10.0)
            except httpx2.TransportError as error:  # its worker was killed mid-request
                self.refusals[type(error).__name__] += 1
            else:
                if response.status_code in (200, 201):
                    self.acknowledged[body["id"]] = time.time()
                    return
                self.refusals[f"{response.status_code} {error_body(response).get('code')}"] += 1
            time.sleep(0.25)


def add_jobs(instance: AppInstance) -> None:
    """Add the two interval jobs through the HTTP API."""
    for job_id in JOBS:
        created = instance.request(
            "POST",
            "/jobs",
            json={
                "function": "tick",
                "trigger": {"type": "interval", "seconds": TICK_SECONDS},
                "arguments": {"key": job_id},
                "id": job_id,
                # Every tick runs, late or not, and none is merged: an unbroken series.
                "coalesce": False,
                "misfire_grace_time": 300,
                "max_instances": 100,
            },
        )
        assert created.status_code == 201, created.text


def test_two_instances_with_killed_workers_and_a_database_restart_run_everything_once(
    postgres: PostgresServer, service: Service, start_app: StartApp
) -> None:
    seed = int(time.time())
    chooser = random.Random(seed)
    report(f"random seed {seed}")
    url = postgres.create_database("cluster")
    engine = sa.create_engine(url, pool_pre_ping=True)
    submitter: Submitter | None = None
    try:
        a = start_app("A", workers=2, database_url=url)
        b = start_app("B", workers=1, database_url=url)
        for instance in (a, b):
            instance.wait_workers(timeout=START_TIMEOUT)
            wait_until(
                lambda i=instance: i.request("GET", "/health").status_code == 200,  # type: ignore[misc]
                timeout=START_TIMEOUT,
                what=f"{instance.name} healthy",
            )
        first_workers = [*a.started().values(), *b.started().values()]
        install_audit(engine)
        add_jobs(b)
        # Attempts longer than a lease: only renewals keep them with their worker.
        slow = [poll_request(f"slow{n}", callbacks=True, seconds=SLOW_SECONDS) for n in range(6)]
        for number, body in enumerate(slow):
            created = (a, b)[number % 2].request("POST", "/polls", json=body)
            assert created.status_code == 201, created.text
        bodies = [poll_request(f"p{n:04d}", callbacks=n % 4 == 0) for n in range(POLLS)]
        submitter = Submitter([a.port, b.port], bodies, waves=20)
        submitter.start()
        kills: list[Kill] = []

        def kill_a_worker(during_outage: bool, spare: str = "") -> None:
            pids = [pid for pid, worker in a.started().items() if worker != spare]
            pids = [pid for pid in a.worker_pids() if pid in pids]
            assert pids, "no worker of A to kill"
            pid = chooser.choice(pids)
            done = Kill(pid, a.started()[pid], datetime.now(UTC), during_outage)
            sigkill(pid)
            # Its rows no longer change: what it holds now is what it held when it died.
            # (While the database is down nothing can be read; the audit log has it.)
            if not during_outage:
                lease_snapshot(engine, done)
            kills.append(done)

        # -- the outage: PostgreSQL stops under load; a worker dies and is respawned ---
        # It is timed against one worker's lease renewals (see OUTAGE_START): its long
        # attempts keep their leases only if it renews them soon after the database is
        # back, not merely at its next regular renewal.
        renewed_at, renewed_by = wait_for_renewal(
            engine, [body["id"] for body in slow], timeout=WORK_TIMEOUT
        )
        time.sleep(max(0.0, renewed_at + OUTAGE_START - time.monotonic()))
        before_outage = set(a.started())
        down, down_monotonic = datetime.now(UTC), time.monotonic()
        postgres.stop("fast")
        # Not the worker the outage is timed against: its leases are the ones to watch.
        kill_a_worker(True, spare=renewed_by)
        check_outage_answers([a, b])
        # uvicorn respawns it (in about a second here), so it starts while the database
        # is down: it must come up degraded, not fail, which would make uvicorn stop.
        planned_back = down_monotonic + OUTAGE_SECONDS
        while time.monotonic() < planned_back and set(a.worker_pids()) <= before_outage:
            a.check_alive()
            time.sleep(0.05)
        started_degraded = set(a.worker_pids()) - before_outage
        if started_degraded:
            check_outage_answers([a, b])
        time.sleep(max(0.0, planned_back - time.monotonic()))
        # No submit may wake an engine now: what follows is the engines' own recovery.
        submitter.hold.set()
        postgres.start()
        back, back_monotonic = datetime.now(UTC), time.monotonic()
        outage = Outage(down, back)
        api_resume = (
            wait_until(
                lambda: all(i.request("GET", "/polls").status_code == 200 for i in (a, b)),
                timeout=WORK_TIMEOUT,
                what="the API answers again",
            )
            - back_monotonic
        )
        claimed_since = (
            f"SELECT 1 FROM {PREFIX}audit_claims WHERE at > '{back.replace(tzinfo=None)}'"
        )
        wait_until(
            lambda: bool(rows(engine, claimed_since)), timeout=WORK_TIMEOUT, what="work again"
        )
        submitter.hold.clear()
        respawned = set(a.wait_workers(timeout=START_TIMEOUT)) - before_outage
        assert len(respawned) == 1, respawned
        (respawned_worker,) = (a.started()[pid] for pid in respawned)
        for pid in started_degraded:
            degraded = a.log_lines(f"ERROR {pid} fastapi_jobpoller.poller: database unreachable")
            assert degraded, a.log()

        for pause in (2.0, 3.0, 3.0):
            time.sleep(pause)
            kill_a_worker(False)

        submitter.join(timeout=WORK_TIMEOUT)
        assert not submitter.is_alive(), "submitting did not end"
        assert len(submitter.acknowledged) == POLLS, submitter.refusals
        finished = (
            f"SELECT count(*) FROM {PREFIX}polls "
            "WHERE state NOT IN ('pending', 'running') AND NOT callbacks_pending"
        )
        wait_until(
            lambda: rows(engine, finished)[0][0] == POLLS + len(slow),
            timeout=WORK_TIMEOUT,
            what="every poll ended and its callbacks delivered",
        )
        for job_id in JOBS:
            assert b.request("DELETE", f"/jobs/{job_id}").status_code == 204
        wait_until(
            lambda: not rows(engine, f"SELECT 1 FROM {PREFIX}job_runs WHERE state = 'running'"),
            timeout=WORK_TIMEOUT,
            what="the last job runs ended",
        )
        for instance in (a, b):
            instance.stop()

        # -- what the database and the service say -----------------------------------
        killed = {k.worker: k for k in kills}
        claims = rows(engine, f"SELECT * FROM {PREFIX}audit_claims ORDER BY id")
        reruns = rows(engine, f"SELECT * FROM {PREFIX}audit_reruns ORDER BY id")
        acknowledged = set(submitter.acknowledged) | {body["id"] for body in slow}
        repeated = check_polls(engine, service, acknowledged, claims, killed)
        check_jobs(engine, service, reruns, killed, jobs=JOBS, period=TICK_SECONDS)
        delays = check_takeovers(kills, claims, reruns, outage)
        # No live worker's lease ran out, even for a moment, and none was taken over.
        late_renewals = [
            c for c in claims if c.old_owner == c.new_owner and c.old_attempts == c.new_attempts
        ]
        assert not late_renewals, late_renewals
        resume = (min(aware(c.at) for c in claims if aware(c.at) > back) - back).total_seconds()
        assert resume <= RESUME_BOUND, f"work resumed {resume:.3f} s after the database"
        calls = service.calls()
        per_worker = Counter(c.worker for c in calls)
        # The work spread over every process, the one respawned during the outage included
        # (unless it was killed again before it got any).
        assert all(per_worker[worker] for worker in first_workers), per_worker
        assert per_worker[respawned_worker] or respawned_worker in killed, per_worker
        for instance in (a, b):
            bugs = instance.log_lines("Traceback", "engine task failed", "dispatch cycle failed")
            assert not bugs, instance.log()
        report(
            f"{POLLS + len(slow)} polls, {len(calls)} calls over {len(per_worker)} processes; "
            f"{len(kills)} kills: "
            + ", ".join(
                f"{sum(1 for c in claims if c.old_owner == k.worker)} polls and "
                f"{sum(1 for r in reruns if r.old_worker == k.worker)} job runs taken over"
                for k in kills
            )
        )
        report(
            f"takeover after lease expiry: {min(delays):.3f}-{max(delays):.3f} s over "
            f"{len(delays)} rows; outage {(back - down).total_seconds():.1f} s: work resumed "
            f"{resume:.3f} s after it, API {api_resume:.3f} s; submit refusals "
            f"{dict(submitter.refusals)}; {repeated} attempts repeated after kills; "
            f"worker respawned during the outage started degraded: {bool(started_degraded)}"
        )
    finally:
        if submitter is not None:
            submitter.give_up_at = 0.0  # stop it, if a failure left it submitting
        engine.dispose()


def schema_versions(url: str) -> list[int]:
    """Return the rows of the schema version table (one, if the schema was made once)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.select(TABLES.schema_version.c.version)).scalars())
    finally:
        engine.dispose()


def count_finished(url: str) -> int:
    """Return how many polls have ended."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            polls = TABLES.polls
            query = sa.select(sa.func.count()).where(polls.c.state == "succeeded")
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def submit_all(instance: AppInstance, bodies: list[dict[str, Any]]) -> None:
    """Submit polls through one instance; every one must be accepted at once."""
    for body in bodies:
        created = instance.request("POST", "/polls", json=body)
        assert created.status_code == 201, created.text


def test_workers_starting_together_on_an_empty_database_create_the_schema_once(
    postgres: PostgresServer, start_app: StartApp
) -> None:
    url = postgres.create_database("empty")
    engine = sa.create_engine(url)
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'empty' AND wait_event_type = 'Lock'"
    )
    try:
        with engine.connect() as gate:
            # Creating a table adds a row type to pg_type: with this lock held, every
            # process's first CREATE TABLE (or whatever it waits for before one) waits,
            # so that all five are let go at the same moment and really race.
            gate.exec_driver_sql("LOCK TABLE pg_catalog.pg_type IN SHARE MODE")
            apps = [
                start_app("A", workers=4, database_url=url),
                start_app("B", workers=1, database_url=url),
            ]

            def all_waiting() -> bool:
                gate.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
                for instance in apps:
                    instance.check_alive()
                return int(gate.exec_driver_sql(waiting).scalar_one()) >= 5

            wait_until(all_waiting, timeout=START_TIMEOUT, what="five processes creating tables")
            gate.commit()
    finally:
        engine.dispose()
    for instance in apps:
        instance.wait_workers(timeout=START_TIMEOUT)
        wait_until(
            lambda i=instance: i.request("GET", "/health").status_code == 200,  # type: ignore[misc]
            timeout=START_TIMEOUT,
            what=f"{instance.name} healthy",
        )
    assert schema_versions(url) == [1]
    for instance in apps:
        # None came up degraded or failed a query: a worker that lost the race to create
        # a table would have failed its start, and uvicorn would have stopped.
        assert not instance.log_lines("ERROR", "Traceback"), instance.log()
        instance.check_alive()
    for instance in apps:
        instance.stop()


def test_workers_started_while_the_database_is_down_serve_degraded_and_recover(
    postgres: PostgresServer, service: Service, start_app: StartApp
) -> None:
    url = postgres.create_database("later")
    postgres.stop()
    a = start_app("A", workers=2, database_url=url)
    a.wait_workers(timeout=START_TIMEOUT)
    workers = a.started()
    assert len(a.log_lines("database unreachable at start")) == 2, a.log()
    for _ in range(4):  # HTTP is served by both, degraded
        health = a.request("GET", "/health")
        assert health.status_code == 503 and health.json()["database_ok"] is False, health.text
        refused = a.request("POST", "/polls", json=poll_request("early", callbacks=False))
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "database_unavailable"
        assert refused.headers["Retry-After"]
    time.sleep(2.0)  # the engines keep retrying meanwhile; uvicorn keeps its workers
    assert a.worker_pids() == sorted(workers), a.log()

    postgres.start()
    back = time.monotonic()
    # Each worker recovers on its own retry schedule: wait until every one said healthy
    # (requests go to whichever worker accepts them).
    healthy_workers: set[str] = set()

    def every_worker_healthy() -> bool:
        health = a.request("GET", "/health")
        if health.status_code == 200:
            healthy_workers.add(health.json()["worker_id"])
        return healthy_workers == set(workers.values())

    healthy = wait_until(every_worker_healthy, timeout=WORK_TIMEOUT, what="healthy again")
    report(f"healthy {healthy - back:.3f} s after the database came back")
    assert schema_versions(url) == [1]
    bodies = [poll_request(f"late{n:03d}", callbacks=False) for n in range(100)]
    submit_all(a, bodies)
    wait_until(lambda: count_finished(url) == len(bodies), timeout=WORK_TIMEOUT, what="polls done")
    # Both workers recovered: both made calls.
    per_worker = Counter(call.worker for call in service.calls("poll"))
    assert set(per_worker) == set(workers.values()), per_worker
    a.stop()
    assert not a.log_lines("Traceback", "engine task failed", "dispatch cycle failed"), a.log()


def test_two_workers_on_one_sqlite_file_run_every_attempt_exactly_once(
    tmp_path: Path, service: Service, start_app: StartApp
) -> None:
    url = f"sqlite:///{tmp_path / 'jobpoller.db'}"
    a = start_app("A", workers=2, database_url=url)
    workers = a.wait_workers(timeout=START_TIMEOUT)
    bodies = [poll_request(f"q{n:03d}", callbacks=False) for n in range(100)]
    submit_all(a, bodies)
    wait_until(lambda: count_finished(url) == len(bodies), timeout=WORK_TIMEOUT, what="polls done")
    a.stop()
    assert not a.log_lines("ERROR", "Traceback"), a.log()

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            polls = {row.id: row for row in connection.execute(sa.select(TABLES.polls))}
            history = list(connection.execute(sa.select(TABLES.poll_attempts)))
    finally:
        engine.dispose()
    calls = by_key(service.calls("poll"))
    recorded: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for attempt in sorted(history, key=lambda row: row.attempt):
        recorded[attempt.poll_id].append(attempt)
    assert set(polls) == {body["id"] for body in bodies} == set(calls)
    for poll_id, poll in polls.items():
        made = calls[poll_id]
        # Three calls, three attempts, each by the process that recorded it, one at a time.
        assert [c.seq for c in made] == [1, 2, 3] and poll.attempts == 3, (poll, made)
        assert poll.state == "succeeded" and poll.result == {"calls": 3}, poll
        assert [r.attempt for r in recorded[poll_id]] == [1, 2, 3], recorded[poll_id]
        assert [r.worker for r in recorded[poll_id]] == [c.worker for c in made]
        for earlier, later in pairwise(made):
            assert earlier.left is not None and earlier.left <= later.arrived, (earlier, later)
    per_worker = Counter(c.worker for rows_of in calls.values() for c in rows_of)
    report(f"calls per worker: {dict(per_worker)}")
    assert set(per_worker) == {a.started()[pid] for pid in workers}, per_worker
