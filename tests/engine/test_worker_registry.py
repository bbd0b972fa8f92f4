"""The worker registry on every database: processes register, heartbeat and leave; a client
accepts work only a live worker can run; /health and /workers show the cluster.

Pollers in one test process stand in for processes here (each has its own worker id,
engine and connections); the takeover of killed processes is tested with real processes
in tests/processes/test_workers.py.
"""

import asyncio
import logging
import time
from datetime import timedelta

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from fastapi_jobpoller import (
    Done,
    EventType,
    FunctionNotFoundError,
    IntervalTrigger,
    InvalidArgumentsError,
    JobPoller,
    PollState,
    WorkerInfo,
    mount_scheduler,
)
from fastapi_jobpoller._storage.tables import utcnow
from tests.conftest import PollerFactory
from tests.helpers import WAIT, ended

pytestmark = pytest.mark.anyio

KEY = "registry-test-key-0123456789"


def engine_with_a_function(make_poller: PollerFactory, **settings: object) -> JobPoller:
    poller = make_poller(**{"heartbeat_seconds": 0.1, **settings})

    @poller.poll_function()
    def only_here(ticket: str) -> Done:
        return Done({"ticket": ticket})

    return poller


async def listed(poller: JobPoller, count: int) -> list[WorkerInfo]:
    """The registry once it holds `count` rows."""
    give_up_at = time.monotonic() + WAIT
    while len(rows := await poller.list_workers()) != count:
        assert time.monotonic() < give_up_at, f"the registry holds {rows}, not {count} rows"
        await asyncio.sleep(0.05)
    return rows


async def test_processes_register_with_role_and_functions_and_leave_at_shutdown(
    make_poller: PollerFactory,
) -> None:
    engine = engine_with_a_function(make_poller)
    client = make_poller(run_engine=False, heartbeat_seconds=0.1)
    async with client:
        async with engine:
            by_id = {w.id: w for w in await listed(client, 2)}
            assert set(by_id) == {engine.worker_id, client.worker_id}
            assert (by_id[engine.worker_id].role, by_id[client.worker_id].role) == (
                "engine",
                "client",
            )
            assert by_id[engine.worker_id].functions["poll"] == ["only_here"]
            assert by_id[client.worker_id].functions["poll"] == []
            assert all(w.alive and w.version and w.pid for w in by_id.values())
            health = await client.health()
            assert (health.role, health.status, health.workers) == ("client", "ok", 2)
            assert not health.engine_alive and health.problems == []
            assert (await engine.health()).role == "engine"
        # The engine stopped: its row is gone at once, not a heartbeat later.
        assert [w.id for w in await client.list_workers()] == [client.worker_id]


async def test_a_client_runs_nothing_but_submits_work_a_live_worker_registers(
    make_poller: PollerFactory,
) -> None:
    engine = engine_with_a_function(make_poller)
    client = make_poller(run_engine=False, heartbeat_seconds=0.1)
    async with client:
        with pytest.raises(FunctionNotFoundError, match="in this process or in a live worker"):
            await client.start_poll("only_here", {"ticket": "t"})
        async with engine:
            await listed(client, 2)
            await asyncio.sleep(0.3)  # the client's next heartbeat reads the engine's row
            poll = await client.start_poll("only_here", {"ticket": "t-1"}, interval=0.05)
            with pytest.raises(InvalidArgumentsError, match="come back equal from JSON"):
                await client.start_poll("only_here", {"ticket": ("a", "tuple")})
            with pytest.raises(FunctionNotFoundError):
                await client.start_poll("nobody_has_it", {})
            done = await ended(engine, poll.id)
            assert (done.state, done.result) == (PollState.SUCCEEDED, {"ticket": "t-1"})


async def test_the_workers_route_lists_the_registry_for_read_access_only(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(api_key=KEY, heartbeat_seconds=0.1)
    app = FastAPI()
    mount_scheduler(app, poller)
    async with poller:
        await listed(poller, 1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/jobpoller/workers")).status_code == 401
            answer = await http.get("/jobpoller/workers", headers={"X-API-Key": KEY})
            assert answer.status_code == 200
            (row,) = answer.json()
            assert (row["id"], row["role"], row["alive"]) == (poller.worker_id, "engine", True)
            health = (await http.get("/jobpoller/health")).json()
            assert (health["role"], health["workers"]) == ("engine", 1)


async def test_polls_no_live_process_can_run_are_reported_not_failed(
    make_poller: PollerFactory,
) -> None:
    async with engine_with_a_function(make_poller) as engine:
        poll = await engine.start_poll("only_here", {"ticket": "t"}, delay=0.5)
    # It puts back what it cannot run for a second, not the default minute: the test
    # waits for the poll to end once a process that registers the function starts.
    stranger = make_poller(heartbeat_seconds=0.1, unknown_function_retry_seconds=1)
    async with stranger:
        assert stranger._dispatcher is not None
        later = utcnow() + timedelta(minutes=3)
        report = await asyncio.to_thread(stranger._dispatcher.upkeep.look, later)
        assert report.unclaimed_polls == {"only_here": 1}
        for _ in range(int(WAIT / 0.05)):  # until the stranger claimed it and put it back
            if (stored := await stranger.get_poll(poll.id)).error is not None:
                break
            await asyncio.sleep(0.05)
        assert stored.state is PollState.PENDING and stored.attempts == 0  # nothing failed
        assert stored.error is not None and "is not registered in" in stored.error
        # Once a live process registers the function, nothing is unclaimed any more, and
        # that process runs the poll.
        async with engine_with_a_function(make_poller) as engine:
            await listed(stranger, 2)
            await asyncio.sleep(0.3)  # the stranger's next heartbeat reads the registry
            report = await asyncio.to_thread(stranger._dispatcher.upkeep.look, later)
            assert report.unclaimed_polls == {}
            done = await ended(engine, poll.id)
            assert done.state is PollState.SUCCEEDED


async def test_a_poll_claimed_by_a_process_without_its_function_soon_reaches_one_with_it(
    make_poller: PollerFactory,
) -> None:
    # Both run engines and claim any due poll; only `engine` can run these. The stranger
    # knows from the registry that a live process can, so it puts each one it claims back
    # for a second, not for `unknown_function_retry_seconds` (a minute).
    stranger = make_poller(heartbeat_seconds=0.1)
    put_back: list[str] = []
    stranger.add_listener(
        lambda event: put_back.append(str(event.poll_id)) if event.error else None,
        EventType.POLL_PENDING,
    )
    async with engine_with_a_function(make_poller) as engine, stranger:
        await listed(stranger, 2)
        await asyncio.sleep(0.3)
        polls = [
            await stranger.start_poll("only_here", {"ticket": f"t{n}"}, interval=0.05)
            for n in range(20)
        ]
        for poll in polls:
            assert (await ended(engine, poll.id)).state is PollState.SUCCEEDED
    assert put_back, "the stranger claimed none: the test shows nothing"


async def test_a_client_knows_a_worker_that_started_after_its_last_heartbeat(
    make_poller: PollerFactory,
) -> None:
    # The client beats once a minute: only the look-up made when a name is unknown can
    # tell it that the engine started since.
    client = make_poller(run_engine=False, heartbeat_seconds=60)
    async with client:
        await listed(client, 1)
        async with engine_with_a_function(make_poller) as engine:
            await listed(client, 2)
            poll = await client.start_poll("only_here", {"ticket": "late"}, interval=0.05)
            assert (await ended(engine, poll.id)).state is PollState.SUCCEEDED


async def test_a_client_leaves_declared_jobs_it_cannot_check_to_the_engines(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = IntervalTrigger(hours=1)
    client = make_poller(run_engine=False, heartbeat_seconds=0.1)
    client.declare_job("nightly", "report", trigger, arguments={"ticket": "n"})
    engine = make_poller(heartbeat_seconds=0.1)

    @engine.job_function()
    def report(ticket: str) -> str:
        return ticket

    engine.declare_job("nightly", "report", trigger, arguments={"ticket": "n"})
    caplog.set_level(logging.INFO, logger="fastapi_jobpoller")
    async with client:  # no engine runs yet: the client cannot check the declaration
        deferred = [r for r in caplog.records if "left to the engine" in r.getMessage()]
        assert len(deferred) == 1
        async with engine:
            assert (await client.get_job("nightly")).function == "report"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_process_whose_session_ended_is_taken_over_and_reported_once(
    make_poller: PollerFactory,
) -> None:
    """A registry row with a presence lock nobody holds and a silent heartbeat: the
    process is gone. Its leases are handed back, its row deleted, and a `worker_lost`
    event is published on the event loop."""
    # A long lease: the row is not merely forgotten as stale before the survivor, which
    # trusts the locks once it has held its own for 5 s, takes it over.
    survivor = engine_with_a_function(make_poller, lease_seconds=30)
    lost: list[dict[str, object]] = []
    survivor.add_listener(lambda event: lost.append(event.details), EventType.WORKER_LOST)
    async with survivor:
        poll = await survivor.start_poll("only_here", {"ticket": "t"}, delay=3600)
        space = survivor._presence.presence._lock[0]  # type: ignore[union-attr,index]
        now = utcnow()
        dead = {
            "id": "gone-host:1:deadbeef",
            "host": "gone-host",
            "pid": 1,
            "role": "worker",
            "version": "0",
            "started_at": now - timedelta(minutes=5),
            "heartbeat_at": now - timedelta(seconds=5),  # silent, not yet stale
            "heartbeat_seconds": 0.5,
            "functions": {"poll": ["only_here"]},
            "in_flight": 1,
            "threads_stuck": 0,
            "lock_key": 12345,  # held by no session
        }
        assert space is not None
        tables = survivor._workers._table, survivor._polls._table
        with survivor._database.engine.begin() as connection:  # type: ignore[union-attr]
            connection.execute(tables[0].insert().values(**dead))
            connection.execute(
                tables[1]
                .update()
                .where(tables[1].c.id == poll.id)
                .values(lease_owner=dead["id"], next_poll_at=now + timedelta(hours=1))
            )
        give_up_at = time.monotonic() + WAIT
        while not lost:
            assert time.monotonic() < give_up_at, "the dead process was never taken over"
            await asyncio.sleep(0.1)
        assert lost == [{"lost_worker": dead["id"], "polls": 1, "job_runs": 0}]
        assert (await ended(survivor, poll.id)).state is PollState.SUCCEEDED
        assert [w.id for w in await survivor.list_workers()] == [survivor.worker_id]
