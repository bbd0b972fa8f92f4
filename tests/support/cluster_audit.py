"""What tests/processes/test_cluster.py checks, and the audit log it checks it with.

The audit log is a pair of PostgreSQL triggers on the library's tables: they record every
claim of a poll (and every takeover of an expired lease) and every re-run of a job run,
with the time the database saw it. Checked against the fake service's count of the calls
the functions really made, it shows whether anything ran twice, and when a killed
worker's work was taken over.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller._storage.tables import Tables
from tests.support.cluster_support import AppInstance, Call, Service

PREFIX = "cluster_"
TABLES = Tables(PREFIX)
# What the library promises: a killed worker's work is taken over within 2 s of its
# lease's expiry, and work goes on within 5 s of the database's return.
TAKEOVER_BOUND = 2.0
RESUME_BOUND = 5.0


@dataclass
class Kill:
    """A worker SIGKILLed, and the rows it held leased at that moment."""

    pid: int
    worker: str
    at: datetime
    during_outage: bool
    polls: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)


@dataclass
class Outage:
    """When the test's PostgreSQL was down."""

    down: datetime
    back: datetime


def install_audit(engine: sa.Engine) -> None:
    """Log every claim of a poll and every re-run of a job run, from inside PostgreSQL.

    A row is logged when an update gives it a lease owner that is new, or a new attempt,
    or reaches it after its old lease expired: claims and takeovers, not the renewals of
    a live lease. Times are naive UTC like the library's.
    """
    now = "(clock_timestamp() AT TIME ZONE 'UTC')"
    statements = [
        f"""CREATE TABLE {PREFIX}audit_claims (
            id bigserial PRIMARY KEY, poll_id text NOT NULL, at timestamp NOT NULL,
            old_state text NOT NULL, new_state text NOT NULL,
            old_attempts integer NOT NULL, new_attempts integer NOT NULL,
            old_owner text, new_owner text, old_expires timestamp)""",
        f"""CREATE FUNCTION {PREFIX}audit_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.lease_owner IS NOT NULL AND (
                NEW.lease_owner IS DISTINCT FROM OLD.lease_owner
                OR NEW.attempts <> OLD.attempts
                OR OLD.lease_expires_at <= {now}
            ) THEN
                INSERT INTO {PREFIX}audit_claims (poll_id, at, old_state, new_state,
                    old_attempts, new_attempts, old_owner, new_owner, old_expires)
                VALUES (NEW.id, {now}, OLD.state, NEW.state, OLD.attempts, NEW.attempts,
                    OLD.lease_owner, NEW.lease_owner, OLD.lease_expires_at);
            END IF;
            RETURN NULL;
        END $$""",
        f"""CREATE TRIGGER {PREFIX}audit_claim AFTER UPDATE ON {PREFIX}polls
            FOR EACH ROW EXECUTE FUNCTION {PREFIX}audit_claim()""",
        f"""CREATE TABLE {PREFIX}audit_reruns (
            id bigserial PRIMARY KEY, run_id text NOT NULL, job_id text NOT NULL,
            at timestamp NOT NULL, old_state text NOT NULL, old_attempt integer NOT NULL,
            new_attempt integer NOT NULL, old_worker text, new_worker text, old_due timestamp)""",
        f"""CREATE FUNCTION {PREFIX}audit_rerun() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {PREFIX}audit_reruns (run_id, job_id, at, old_state, old_attempt,
                new_attempt, old_worker, new_worker, old_due)
            VALUES (NEW.id, NEW.job_id, {now}, OLD.state, OLD.attempt, NEW.attempt,
                OLD.worker, NEW.worker, OLD.due_at);
            RETURN NULL;
        END $$""",
        f"""CREATE TRIGGER {PREFIX}audit_rerun AFTER UPDATE ON {PREFIX}job_runs
            FOR EACH ROW WHEN (NEW.attempt <> OLD.attempt)
            EXECUTE FUNCTION {PREFIX}audit_rerun()""",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def rows(engine: sa.Engine, query: str) -> list[sa.Row[Any]]:
    """Run one query on the test's own connection."""
    with engine.connect() as connection:
        return list(connection.execute(sa.text(query)).all())


def aware(value: datetime) -> datetime:
    """Attach UTC to a naive UTC timestamp read back from the audit tables."""
    return value.replace(tzinfo=UTC)


def lease_snapshot(engine: sa.Engine, kill: Kill) -> None:
    """Record what a killed worker held: its leased polls and its running job runs."""
    polls, runs = TABLES.polls, TABLES.job_runs
    with engine.connect() as connection:
        kill.polls = set(
            connection.execute(
                sa.select(polls.c.id).where(
                    polls.c.lease_owner == kill.worker, polls.c.next_poll_at.is_not(None)
                )
            ).scalars()
        )
        kill.runs = set(
            connection.execute(
                sa.select(runs.c.id).where(runs.c.worker == kill.worker, runs.c.state == "running")
            ).scalars()
        )


def by_key(calls: list[Call]) -> dict[str, list[Call]]:
    """Group calls by key, each group in order of arrival."""
    grouped: dict[str, list[Call]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c.arrived):
        grouped[call.key].append(call)
    return grouped


def check_polls(
    engine: sa.Engine,
    service: Service,
    acknowledged: set[str],
    claims: list[sa.Row[Any]],
    killed: dict[str, Kill],
) -> int:
    """Check every poll against its claims and its calls; return the repeated calls.

    A call may repeat only when the worker that made the call before it was killed.
    """
    with engine.connect() as connection:
        polls = {row.id: row for row in connection.execute(sa.select(TABLES.polls))}
    assert set(polls) == acknowledged, "polls lost, or polls nobody submitted"
    calls, deliveries = by_key(service.calls("poll")), by_key(service.calls("callback"))
    claims_of: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for claim in claims:
        claims_of[claim.poll_id].append(claim)
    repeated = 0
    for poll_id, poll in polls.items():
        made = calls[poll_id]
        assert poll.state == "succeeded", poll
        # The service numbered the calls: none lost from its count, none at once.
        assert [c.seq for c in made] == list(range(1, len(made) + 1)), made
        assert poll.result == {"calls": len(made)}, (poll, made)
        for earlier, later in pairwise(made):
            # A call ends when the service answers, or when its caller is killed.
            assert earlier.left is not None, earlier
            ended = earlier.left
            if earlier.worker in killed:
                ended = min(ended, killed[earlier.worker].at)
            assert ended <= later.arrived, (earlier, later)
        # The audit log: each attempt number claimed once, in order.
        attempts = [c for c in claims_of[poll_id] if c.new_attempts == c.old_attempts + 1]
        assert [c.new_attempts for c in attempts] == list(range(1, poll.attempts + 1))
        for claim in claims_of[poll_id]:
            if claim.new_owner == claim.old_owner and claim.new_attempts == claim.old_attempts:
                continue  # a live lease renewed after it expired: see late_renewals
            if claim.old_owner is None:
                assert claim.old_state in ("pending", "succeeded"), claim
            else:  # a takeover: only of a killed worker's lease, and only once expired
                assert claim.old_owner in killed, f"a live worker's lease taken over: {claim}"
                assert aware(claim.old_expires) <= aware(claim.at), claim
        # Each call was made by the worker holding the latest claim, once per claim.
        starts = [aware(c.at) for c in attempts]
        ends = [*starts[1:], datetime.max.replace(tzinfo=UTC)]
        for number, (claim, start, end) in enumerate(zip(attempts, starts, ends, strict=True)):
            inside = [c for c in made if start <= c.arrived < end]
            assert [c.worker for c in inside] in ([claim.new_owner], []), (claim, inside)
            if not inside:  # claimed, then killed before it called the service
                assert claim.new_owner in killed, (claim, made)
            elif number + 1 < len(attempts) and attempts[number + 1].old_owner is not None:
                repeated += 1  # its outcome was never stored: the next claim ran it again
        assert sum(1 for c in made if c.arrived >= starts[0]) == len(made), made
        # Callbacks: delivered; again only after the worker delivering them was killed.
        delivered = deliveries[poll_id]
        if poll.callbacks:
            assert delivered and not poll.callbacks_pending, (poll, delivered)
            assert all(c.worker in killed for c in delivered[:-1]), delivered
        else:
            assert not delivered, delivered
    return repeated


def check_jobs(
    engine: sa.Engine,
    service: Service,
    reruns: list[sa.Row[Any]],
    killed: dict[str, Kill],
    *,
    jobs: tuple[str, ...],
    period: float,
) -> None:
    """Check that each tick became one run and each run made one call; that runs ran
    again only after their worker was killed."""
    runs = TABLES.job_runs
    with engine.connect() as connection:
        all_runs = list(connection.execute(sa.select(runs).order_by(runs.c.scheduled_at)))
    ticks = by_key(service.calls("tick"))
    for rerun in reruns:
        assert rerun.old_state == "running" and rerun.old_worker in killed, rerun
        assert aware(rerun.old_due) <= aware(rerun.at), rerun
    for job_id in jobs:
        job_runs = [run for run in all_runs if run.job_id == job_id]
        assert len(job_runs) >= 20, "the job hardly ran"
        assert {run.state for run in job_runs} == {"succeeded"}, job_runs
        for earlier, later in pairwise(job_runs):
            step = (later.scheduled_at - earlier.scheduled_at).total_seconds()
            assert abs(step - period) < 0.001, (earlier, later)
        # Pair each call with a run of its worker spanning it; a call left over must be
        # a killed worker's, for a run that was then run again.
        unpaired, extra = list(job_runs), []
        for call in ticks[job_id]:
            eligible = [
                run
                for run in unpaired
                if run.worker == call.worker
                and run.started_at <= call.arrived
                and call.left is not None
                and call.left <= run.finished_at
            ]
            if eligible:
                unpaired.remove(min(eligible, key=lambda run: run.finished_at))
            else:
                extra.append(call)
        assert not unpaired, f"runs without their call: {unpaired}"
        for call in extra:
            assert call.worker in killed and call.arrived <= killed[call.worker].at, call
        assert len(extra) <= sum(1 for r in reruns if r.job_id == job_id), (extra, reruns)


def check_takeovers(
    kills: list[Kill], claims: list[sa.Row[Any]], reruns: list[sa.Row[Any]], outage: Outage
) -> list[float]:
    """Check that each killed worker's leases were taken over in time; return the delays."""
    delays = []
    for kill in kills:
        taken = [c for c in claims if c.old_owner == kill.worker and c.new_owner != c.old_owner]
        rerun = [r for r in reruns if r.old_worker == kill.worker]
        # Everything it held when it died was taken over (held rows known unless the
        # database was down then).
        assert set(kill.polls) <= {c.poll_id for c in taken}, (kill, taken)
        assert set(kill.runs) <= {r.run_id for r in rerun}, (kill, rerun)
        for at, expired in [(c.at, c.old_expires) for c in taken] + [
            (r.at, r.old_due) for r in rerun
        ]:
            delay, bound = takeover_delay(aware(at), aware(expired), outage)
            assert 0 <= delay <= bound, (kill, at, expired, delay)
            delays.append(delay)
    return delays


def wait_for_renewal(
    engine: sa.Engine, poll_ids: list[str], *, timeout: float
) -> tuple[float, str]:
    """Wait until one of the polls' leases is renewed; return when (monotonic) and by whom."""
    leases = TABLES.polls
    query = sa.select(leases.c.id, leases.c.lease_owner, leases.c.lease_expires_at).where(
        leases.c.id.in_(poll_ids), leases.c.state == "running"
    )
    with engine.connect() as connection:
        give_up_at = time.monotonic() + timeout
        claimed: dict[str, datetime] = {}
        while len(claimed) < len(poll_ids):
            if time.monotonic() > give_up_at:
                pytest.fail(f"the long attempts are not all running: {claimed}")
            claimed = {row.id: row.lease_expires_at for row in connection.execute(query)}
            connection.rollback()
            time.sleep(0.01)
        give_up_at = time.monotonic() + timeout
        while time.monotonic() < give_up_at:
            for row in connection.execute(query):
                if row.lease_expires_at != claimed[row.id]:
                    return time.monotonic(), str(row.lease_owner)
            connection.rollback()
            time.sleep(0.01)
    pytest.fail(f"no lease of {poll_ids} was renewed in {timeout} s")


def check_outage_answers(instances: list[AppInstance]) -> None:
    """While the database is down every route answers 503: health, and the API's code."""
    for instance in instances:
        for _ in range(3):  # several requests, to reach more than one worker
            health = instance.request("GET", "/health")
            assert health.status_code == 503, (health.status_code, health.text)
            assert health.json()["database_ok"] is False
            listing = instance.request("GET", "/polls", params={"limit": 1})
            assert listing.status_code == 503, (listing.status_code, listing.text)
            assert listing.json()["code"] == "database_unavailable"
            assert listing.headers["Retry-After"]


def takeover_delay(at: datetime, expired: datetime, outage: Outage) -> tuple[float, float]:
    """Return how long after the lease's expiry a takeover came, and the bound it has.

    A lease that expired while the database was down can only be taken over once it is
    back: then the bound is the resume bound, counted from its return.
    """
    if outage.down <= expired <= outage.back:
        return (at - outage.back).total_seconds(), RESUME_BOUND
    return (at - expired).total_seconds(), TAKEOVER_BOUND
