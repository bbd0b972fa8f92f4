"""The worker registry with real processes on PostgreSQL: a killed process's work resumes
within seconds of the kill, not a lease later; a paused one keeps its work; web
processes can be clients while `jobpoller worker` processes run the engine.

The lease stays at its default (30 s) in these tests, so only the registry can explain a
takeover in seconds.
"""

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import FunctionNotFoundError, JobPoller
from tests.helpers import WORK_TIMEOUT, report, wait_for_workers
from tests.support.worker_processes import BASE_SETTINGS, SharedDatabase, StartWorkers, Worker

pytestmark = [pytest.mark.processes, pytest.mark.postgresql]

# What the takeover must beat, from the kill to the next attempt's start.
TAKEOVER_BOUND_SECONDS = 2.0
# Long enough for a second process to trust the presence locks (5 s) after it started.
SETTLE_SECONDS = 6.0
LONG = {"lease_seconds": 30.0, "attempt_timeout": 120.0}


def submit(worker: Worker, function: str, count: int, prefix: str, **arguments: Any) -> None:
    worker.send(
        {
            "op": "submit",
            "function": function,
            "count": count,
            "id_prefix": prefix,
            "arguments": arguments,
        }
    )
    worker.expect("SUBMITTED", timeout=WORK_TIMEOUT)


def starts_by_key(shared: SharedDatabase) -> dict[str, list[sa.Row[Any]]]:
    starts: dict[str, list[sa.Row[Any]]] = defaultdict(list)
    for row in shared.ledger_rows("start"):
        starts[row.key].append(row)
    return starts


def registry(shared: SharedDatabase) -> list[sa.Row[Any]]:
    workers = shared.tables.workers
    return shared.rows(sa.select(workers).order_by(workers.c.started_at))


def a_holding_polls_beside_b(
    shared: SharedDatabase,
    start_workers: StartWorkers,
    count: int,
    seconds: float,
    **a_settings: object,
) -> tuple[Worker, Worker]:
    """Worker A with `count` polls in flight for `seconds`, and B started beside it long
    enough ago to trust the presence locks."""
    (a,) = start_workers("A", **{**LONG, **a_settings})
    submit(a, "wait_first", count, "p", first_call_seconds=seconds)
    wait_for_workers(
        lambda: len(shared.ledger_rows("start")) == count,
        workers=[a],
        what="A started every poll",
    )
    (b,) = start_workers("B", **LONG)
    time.sleep(SETTLE_SECONDS)
    return a, b


def finished_by_a_alone(shared: SharedDatabase, a: Worker, b: Worker, count: int) -> None:
    """Wait until every poll ended, and check that A alone ran them, once each."""
    wait_for_workers(
        lambda: shared.count_polls(finished=True) == count,
        workers=[a, b],
        what="A finished its polls",
    )
    assert {r.pid for r in shared.ledger_rows("end")} == {a.pid}
    assert len(shared.ledger_rows("start")) == count
    a.stop()
    b.stop()


def test_a_killed_process_s_polls_and_job_resume_within_two_seconds_of_the_kill(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    in_flight = 200
    (a,) = start_workers("A", **LONG)
    submit(a, "wait_first", in_flight, "p", first_call_seconds=600)
    a.send(
        {
            "op": "add_job",
            "function": "slow_tick",
            "job_id": "tick",
            "seconds": 1,
            "arguments": {"first_call_seconds": 600},
        }
    )
    a.expect("ADDED", timeout=WORK_TIMEOUT)
    wait_for_workers(
        lambda: (
            len(shared_database.ledger_rows("start")) == in_flight
            and len(shared_database.ledger_rows("tick")) == 1
        ),
        workers=[a],
        what="A started every poll and the job's first tick",
    )
    (b,) = start_workers("B", **LONG)
    time.sleep(SETTLE_SECONDS)
    assert {w.id for w in registry(shared_database)} == {a.worker_id, b.worker_id}
    assert len(shared_database.ledger_rows("start")) == in_flight, "B ran A's work: A lives"
    assert len(shared_database.ledger_rows("tick")) == 1, "ticks ran while the first runs"

    killed_at = datetime.now(UTC)
    a.kill()
    wait_for_workers(
        lambda: (
            len(shared_database.ledger_rows("start")) == 2 * in_flight
            and len(shared_database.ledger_rows("tick")) >= 2
        ),
        workers=[b],
        what="B took over every poll and the job",
        timeout=30,
    )
    reruns = [rows[1] for rows in starts_by_key(shared_database).values()]
    assert len(reruns) == in_flight and {r.pid for r in reruns} == {b.pid}
    delays = sorted((r.at - killed_at).total_seconds() for r in reruns)
    tick = shared_database.ledger_rows("tick")[1]
    tick_delay = (tick.at - killed_at).total_seconds()
    report(
        f"after the kill: {in_flight} polls resumed in {delays[0]:.2f}-{delays[-1]:.2f} s, "
        f"the job's next run in {tick_delay:.2f} s (lease {LONG['lease_seconds']:.0f} s)"
    )
    assert delays[-1] <= TAKEOVER_BOUND_SECONDS
    assert tick.pid == b.pid and tick_delay <= TAKEOVER_BOUND_SECONDS
    assert [w.id for w in registry(shared_database)] == [b.worker_id]
    # None ran a third time: each poll's rerun is B's, once.
    assert all(len(rows) == 2 for rows in starts_by_key(shared_database).values())


def test_a_paused_process_keeps_its_work_and_finishes_it(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    count, pause_seconds = 20, 8.0
    a, b = a_holding_polls_beside_b(shared_database, start_workers, count, pause_seconds + 4)
    a.pause()  # alive, its session open: a long GC pause, a debugger, a saturated host
    try:
        time.sleep(pause_seconds)
        assert len(shared_database.ledger_rows("start")) == count, "B took a paused worker's work"
        assert {w.id for w in registry(shared_database)} == {a.worker_id, b.worker_id}
    finally:
        a.resume()
    finished_by_a_alone(shared_database, a, b, count)
    assert registry(shared_database) == [], "a stopped worker left its row"


def test_a_process_that_lost_only_its_listening_connection_keeps_its_work(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    count = 20
    # A beats four times slower than B: B must judge A's silence by A's period, not its own.
    a, b = a_holding_polls_beside_b(shared_database, start_workers, count, 8, heartbeat_seconds=2)
    (row,) = (w for w in registry(shared_database) if w.id == a.worker_id)
    # The database ends A's listening session (an idle timeout, a DBA): its lock is free.
    with shared_database.engine.begin() as connection:
        ended = connection.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND CAST(objid AS bigint) = :key"
            ),
            {"key": row.lock_key},
        ).all()
    assert ended == [(True,)]
    time.sleep(6)  # three of A's heartbeats, twelve of B's
    assert len(shared_database.ledger_rows("start")) == count, "B took the work of a live A"
    finished_by_a_alone(shared_database, a, b, count)


def test_client_web_processes_submit_and_two_jobpoller_workers_run_everything_once(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    polls, calls = 200, 3
    argv = ["-m", "fastapi_jobpoller", "worker", "tests.support.worker_app:poller"]
    # The web processes' environment says client; the worker command runs the engine anyway.
    workers = start_workers("W1", "W2", argv=argv, run_engine="false")
    client = JobPoller(
        database_url=shared_database.url,
        table_prefix=shared_database.prefix,
        run_engine=False,
        heartbeat_seconds=0.2,
    )

    async def as_a_client() -> tuple[list[Any], dict[str, Any]]:
        async with client:
            deadline = time.monotonic() + WORK_TIMEOUT
            while len([w for w in await client.list_workers() if w.role == "worker"]) < 2:
                for worker in workers:
                    worker.check_alive()
                assert time.monotonic() < deadline, "the workers did not register"
                await asyncio.sleep(0.1)
            with pytest.raises(FunctionNotFoundError, match="live worker"):
                await client.start_poll("nobody_registers_this", {})
            for n in range(polls):
                arguments = {"key": f"c{n:04d}", "finish_after": calls}
                await client.start_poll("count_to", arguments, poll_id=f"c{n:04d}", interval=0.05)
            health = (await client.health()).model_dump()
            listed = await client.list_workers()
        return listed, health

    listed, health = asyncio.run(as_a_client())
    assert health["role"] == "client" and health["status"] == "ok" and health["workers"] == 3
    roles = Counter(w.role for w in listed)
    assert roles == {"worker": 2, "client": 1}
    assert all("count_to" in w.functions["poll"] for w in listed if w.role == "worker")
    assert client.function_names("poll") == []
    wait_for_workers(
        lambda: shared_database.count_polls(finished=True) == polls,
        workers=workers,
        what="the workers finished every poll",
    )
    calls_by_key: dict[str, list[int]] = defaultdict(list)
    for row in shared_database.ledger_rows("call"):
        calls_by_key[row.key].append(row.seq)
    assert len(calls_by_key) == polls
    assert all(sorted(seqs) == list(range(1, calls + 1)) for seqs in calls_by_key.values())
    per_process = Counter(r.pid for r in shared_database.ledger_rows("call"))
    assert set(per_process) == {w.pid for w in workers}, "the work did not spread"
    for worker in workers:
        worker.process.terminate()
        assert worker.process.wait(timeout=30) == 0, worker.log()
        assert " ERROR " not in worker.log_path.read_text(), worker.log()
    assert registry(shared_database) == [], "a stopped worker left its row"
    report(f"two jobpoller workers ran {polls} x {calls} calls: {dict(per_process)}")


def test_a_worker_stopped_under_load_hands_its_polls_to_the_other_at_once(
    shared_database: SharedDatabase, start_workers: StartWorkers
) -> None:
    polls, interval = 100, 0.2
    a, b = start_workers("A", "B", **LONG, default_poll_interval=interval)
    submit(a, "count_to", polls, "s", finish_after=10_000)
    wait_for_workers(
        lambda: len({r.pid for r in shared_database.ledger_rows("call")}) == 2,
        workers=[a, b],
        what="both workers calling",
    )
    time.sleep(1.0)
    stopped_at = datetime.now(UTC)
    a.stop()  # SIGTERM: in-flight work finishes, the rest is handed back
    assert [w.id for w in registry(shared_database)] == [b.worker_id]
    time.sleep(3.0)
    calls = shared_database.ledger_rows("call")
    gaps = []
    for key in {row.key for row in calls}:
        before = [r.at for r in calls if r.key == key and r.at <= stopped_at]
        after = [r.at for r in calls if r.key == key and r.at > stopped_at]
        assert after, f"{key} was not called again after A stopped"
        if before:
            gaps.append((after[0] - before[-1]).total_seconds())
    gaps.sort()
    report(
        f"after a SIGTERM under load, B went on with every poll; the longest gap between "
        f"two calls of a poll was {gaps[-1]:.2f} s (interval {interval} s, idle wait "
        f"{BASE_SETTINGS['idle_wait_seconds']} s)"
    )
    # A poll's next call comes within its interval plus A's stop and one idle wait of B.
    assert gaps[-1] <= interval + 2.0
    b.stop()
