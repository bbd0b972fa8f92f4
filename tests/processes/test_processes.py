"""Real worker processes sharing one PostgreSQL database: every attempt runs once.

Each test starts `tests/support/process_worker.py` as separate OS processes (configured
only by `JOBPOLLER_*` environment variables) and checks two records against each other:
the library's own tables, and a ledger table that the called functions write themselves
on a connection of their own. Threads in one process could not show this: locks, leases and
crashes are about processes.
"""

import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import WORK_TIMEOUT, report, wait_for_workers
from tests.support.worker_processes import SharedDatabase, StartWorkers

pytestmark = [pytest.mark.processes, pytest.mark.postgresql]


def test_two_processes_run_each_attempt_of_every_poll_exactly_once(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    polls_count, calls_per_poll = 300, 3
    a, b = start_workers("A", "B")
    a.send(
        {
            "op": "submit",
            "function": "count_to",
            "count": polls_count,
            "id_prefix": "p",
            "arguments": {"finish_after": calls_per_poll},
            "options": {"interval": 0.02},
        }
    )
    a.expect("SUBMITTED", timeout=WORK_TIMEOUT)
    wait_for_workers(
        lambda: shared_database.count_polls(finished=True) == polls_count,
        timeout=WORK_TIMEOUT,
        workers=[a, b],
        what="every poll finished",
    )
    a.stop()
    b.stop()

    polls = shared_database.polls()
    calls: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for call in shared_database.ledger_rows("call"):
        calls[call.key].append(call)
    assert len(polls) == polls_count
    assert set(calls) == {poll.id for poll in polls}, "a call for a poll that does not exist"
    for poll in polls:
        ledger = calls[poll.id]
        assert poll.state == "succeeded", poll
        assert len(ledger) == poll.attempts == calls_per_poll, (poll, ledger)
        # Each attempt counted the calls before it: a doubled call would repeat a number.
        assert sorted(c.seq for c in ledger) == list(range(1, calls_per_poll + 1)), ledger
        last = max(ledger, key=lambda c: c.seq)
        assert poll.result == {"pid": last.pid, "calls": calls_per_poll}
        assert poll.lease_owner is None and poll.next_poll_at is None
    per_process = Counter(call.pid for rows in calls.values() for call in rows)
    report(f"calls per process: A={per_process[a.pid]} B={per_process[b.pid]}")
    assert set(per_process) == {a.pid, b.pid}, "the work did not spread over both processes"


def test_another_process_reruns_exactly_the_attempts_a_killed_process_had_in_flight(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    """The lease-based takeover, as on databases without presence locks: A is killed 3 s
    after B started, before B trusts the presence locks (5 s after taking its own), and
    A's leases (2 s) run out first. tests/processes/test_workers.py covers the locks."""
    lease_seconds, quick_count, stuck_count = 2.0, 3, 3
    (a,) = start_workers("A", lease_seconds=lease_seconds)
    # A alone takes every first attempt: the quick ones end, the others hang until A dies.
    for id_prefix, count, seconds in (("quick", quick_count, 0), ("stuck", stuck_count, 60)):
        a.send(
            {
                "op": "submit",
                "function": "slow_first",
                "count": count,
                "id_prefix": id_prefix,
                "arguments": {"first_call_seconds": seconds},
            }
        )
        a.expect("SUBMITTED", timeout=WORK_TIMEOUT)
    wait_for_workers(
        lambda: (
            len(shared_database.ledger_rows("start")) == quick_count + stuck_count
            and shared_database.count_polls(finished=True) == quick_count
        ),
        timeout=WORK_TIMEOUT,
        workers=[a],
        what="A started every poll and finished the quick ones",
    )
    (b,) = start_workers("B", lease_seconds=lease_seconds)
    # B runs beside A for longer than a lease: only A's renewals keep B off A's polls.
    time.sleep(lease_seconds * 1.5)
    a.check_alive()
    killed_at = datetime.now().astimezone()
    a.kill()

    starts_before = shared_database.ledger_rows("start")
    ends_before = shared_database.ledger_rows("end")
    in_flight = {s.key for s in starts_before} - {e.key for e in ends_before}
    leases = {poll.id: poll for poll in shared_database.polls() if poll.lease_owner == a.worker_id}
    assert {s.pid for s in starts_before} == {a.pid}
    assert len(starts_before) == quick_count + stuck_count, "a poll ran twice while A lived"
    assert in_flight == {f"stuck{n:05d}" for n in range(stuck_count)}
    assert set(leases) == in_flight, "A's leases are not exactly its attempts in flight"
    for key in in_flight:
        (first_start,) = (s.at for s in starts_before if s.key == key)
        # A renewed its leases while alive: the last one runs past the first.
        assert leases[key].lease_expires_at > first_start + timedelta(seconds=lease_seconds)

    wait_for_workers(
        lambda: shared_database.count_polls(finished=True) == quick_count + stuck_count,
        timeout=lease_seconds + WORK_TIMEOUT,
        workers=[b],
        what="every poll finished after the kill",
    )
    b.stop()

    polls = {poll.id: poll for poll in shared_database.polls()}
    starts: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for start in shared_database.ledger_rows("start"):
        starts[start.key].append(start)
    assert len(polls) == quick_count + stuck_count
    rerun = {key for key, rows in starts.items() if len(rows) > 1}
    assert rerun == in_flight
    takeovers = []
    for key, poll in polls.items():
        assert poll.state == "succeeded", poll
        assert len(starts[key]) == poll.attempts, (poll, starts[key])
        if key not in rerun:
            assert poll.attempts == 1 and poll.result == {"pid": a.pid, "starts": 1}, poll
            continue
        first, second = starts[key]
        assert (first.pid, second.pid) == (a.pid, b.pid)
        assert poll.result == {"pid": b.pid, "starts": 2}
        assert second.at > killed_at
        takeover = (second.at - leases[key].lease_expires_at).total_seconds()
        takeovers.append(takeover)
        assert 0 <= takeover < lease_seconds + 5, f"{key}: taken over {takeover:.3f} s after"
    report(
        f"B re-ran the {len(in_flight)} attempts A had in flight, "
        f"{min(takeovers):.3f}-{max(takeovers):.3f} s after their leases expired"
    )


def test_each_tick_of_an_interval_job_runs_once_across_two_processes(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    period, run_for = 0.2, 3.0
    a, b = start_workers("A", "B")
    a.send(
        {
            "op": "add_job",
            "function": "tick",
            "job_id": "every-200ms",
            "seconds": period,
            # Late ticks still run, one run each, neither merged, missed nor skipped: so
            # the runs must form an unbroken series of ticks.
            "job_options": {"coalesce": False, "misfire_grace_time": 30, "max_instances": 100},
        }
    )
    a.expect("ADDED", timeout=WORK_TIMEOUT)
    give_up_at = time.monotonic() + run_for
    while time.monotonic() < give_up_at:
        a.check_alive()
        b.check_alive()
        time.sleep(0.1)
    a.stop()
    b.stop()

    jobs, job_runs = shared_database.tables.jobs, shared_database.tables.job_runs
    (job,) = shared_database.rows(sa.select(jobs))
    runs = shared_database.rows(sa.select(job_runs).order_by(job_runs.c.scheduled_at))
    ticks = shared_database.ledger_rows("tick")
    pids = {a.worker_id: a.pid, b.worker_id: b.pid}
    step = timedelta(seconds=period)
    # APScheduler adds the period to float timestamps: allow for microsecond rounding.
    close = timedelta(milliseconds=1)

    assert len(runs) >= 5, "the job hardly ran"
    start_date = datetime.fromisoformat(job.trigger["start_date"])
    assert abs(runs[0].scheduled_at - start_date) < close
    for earlier, later in pairwise(runs):
        # Exactly one run per tick: no tick twice, none left out.
        assert abs(later.scheduled_at - earlier.scheduled_at - step) < close, (earlier, later)
    assert abs(job.next_run_at - runs[-1].scheduled_at - step) < close
    assert {run.state for run in runs} == {"succeeded"}, runs
    assert len(ticks) == len(runs), "ledger calls and runs differ in number"
    # Pair each call with the run that made it: same process, inside the run's span.
    # Spans may overlap under load, so each call (in time order) takes the eligible run
    # that ends first, which finds a pairing whenever one exists.
    unpaired = list(runs)
    for call in ticks:
        eligible = [
            run
            for run in unpaired
            if pids[run.worker] == call.pid and run.started_at <= call.at <= run.finished_at
        ]
        assert eligible, f"no run of process {call.pid} spans the call at {call.at}"
        unpaired.remove(min(eligible, key=lambda run: run.finished_at))
    per_process = Counter(call.pid for call in ticks)
    report(f"{len(runs)} ticks: A ran {per_process[a.pid]}, B ran {per_process[b.pid]}")


def test_a_stop_under_load_writes_each_outcome_once_and_hands_every_lease_back(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    """SIGTERM while thousands of attempts a second end and their outcomes are written
    back in batches: the stop is clean (no error logged, no history row twice) and no
    poll stays leased by the stopped process. Three stops, each mid-write by chance."""
    polls, history = shared_database.tables.polls, shared_database.tables.poll_attempts
    for number in range(3):
        (worker,) = start_workers(f"T{number}", attempt_history="all")
        worker.send(
            {
                "op": "submit",
                "function": "keep_going",
                "count": 1000,
                "id_prefix": f"r{number}-",
                "arguments": {},
                "options": {"interval": 0.2},
            }
        )
        worker.expect("SUBMITTED", timeout=WORK_TIMEOUT)
        time.sleep(1.0)  # every poll through several attempts
        worker.stop()  # exit status 0, and nothing logged at ERROR
        leased = shared_database.rows(
            sa.select(polls.c.id).where(polls.c.lease_owner == worker.worker_id)
        )
        assert leased == [], f"{len(leased)} polls still leased after stop {number + 1}"
    recorded = shared_database.rows(
        sa.select(history.c.poll_id, history.c.attempt, sa.func.count())
        .group_by(history.c.poll_id, history.c.attempt)
        .having(sa.func.count() > 1)
    )
    assert recorded == [], "an attempt recorded twice"
    beyond = shared_database.rows(
        sa.select(history.c.poll_id)
        .join(polls, polls.c.id == history.c.poll_id)
        .where(history.c.attempt > polls.c.attempts)
    )
    assert beyond == [], "history records attempts the polls never counted"
