"""The worker registry on every database: processes register, heartbeat and leave; a client
accepts work only a live worker can run; /health and /workers show the cluster.

Pollers in one test process stand in for processes here (each has its own worker id,
engine and connections); the takeover of killed processes is tested with real processes
in tests/processes/test_workers.py.
"""

import asyncio
import time

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from fastapi_jobpoller import (
    Done,
    FunctionNotFoundError,
    InvalidArgumentsError,
    JobPoller,
    PollState,
    WorkerInfo,
    mount_scheduler,
)
from tests.conftest import PollerFactory
from tests.helpers import WAIT, ended

pytestmark = pytest.mark.anyio

KEY = "registry-test-key-0123456789"


def engine_with_a_function(make_poller: PollerFactory) -> JobPoller:
    poller = make_poller(heartbeat_seconds=0.1)

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
        assert client.in_flight == 0 and not client.engine_alive


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
