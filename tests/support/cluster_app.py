"""The app tests/processes/test_cluster.py serves with real uvicorn workers (not a test module).

`python -m uvicorn tests.support.cluster_app:app --workers N` runs it; every setting comes from
`JOBPOLLER_*` environment variables, as in a deployment, and `CLUSTER_SERVICE_URL` names
the fake external service (tests/support/cluster_service.py) that the functions call. The service
counts every call, independently of the library's tables.

Each process writes `CLUSTER-APP STARTED <pid> <worker id>` to stderr once its poller has
started (degraded or not) and `CLUSTER-APP STOPPED <pid>` once it has shut down cleanly,
and logs WARNING and above as `LEVEL pid logger: message`.
"""

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from fastapi import FastAPI

from fastapi_jobpoller import Done, Event, EventType, Pending, PollInfo, mount_scheduler

__all__ = ["app", "poller"]

logging.basicConfig(
    level=logging.WARNING,
    format="%(levelname)s %(process)d %(name)s: %(message)s",
    stream=sys.stderr,
)


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    # The poller stops inside this lifespan: when this runs, it has shut down.
    sys.stderr.write(f"CLUSTER-APP STOPPED {os.getpid()}\n")
    sys.stderr.flush()


app = FastAPI(lifespan=_lifespan)
poller = mount_scheduler(app)
_service = httpx2.Client(base_url=os.environ["CLUSTER_SERVICE_URL"], timeout=30.0)


def _call_service(kind: str, key: str, delay: float | None = None) -> int:
    """Tell the service about one call; return how many it has seen for `key`."""
    call = {"kind": kind, "key": key, "worker": poller.worker_id, "pid": os.getpid()}
    if delay is not None:
        call["delay"] = delay
    response = _service.post("/calls", json=call)
    response.raise_for_status()
    return int(response.json()["seq"])


@poller.poll_function()
def check_status(key: str, finish_after: int, seconds: float | None = None) -> Pending | Done:
    """Ask the service how far the outside work is: done at its `finish_after`th call.

    The service answers at once or after up to 0.2 s, or after `seconds` if given.
    """
    seen = _call_service("poll", key, seconds)
    if seen >= finish_after:
        return Done({"calls": seen})
    return Pending(progress=seen)


@poller.callback()
def record_callback(info: PollInfo) -> None:
    """Tell the service a poll ended."""
    _call_service("callback", info.id)


@poller.job_function()
def tick(key: str) -> None:
    """Tell the service a job ran."""
    _call_service("tick", key)


@poller.on(EventType.SCHEDULER_STARTED)
async def _announce(event: Event) -> None:
    sys.stderr.write(f"CLUSTER-APP STARTED {os.getpid()} {event.worker_id}\n")
    sys.stderr.flush()
