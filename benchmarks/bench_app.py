"""One benchmarked app process: a FastAPI app under uvicorn, with either design inside.

Run by `run.py` as `python bench_app.py '<json config>'`. Prints `READY <time>` once the
scheduler runs. Routes: `POST /submit` (start one poll, as the seed guide's endpoint
does), `POST /bench/dump` (write the recorded attempts to a file).

Designs:
- `jobpoller`: a `JobPoller` started in the lifespan; `jobpoller_poll` returns Pending.
- `apscheduler`: the seed guide's BackgroundScheduler + SQLAlchemyJobStore +
  ThreadPoolExecutor(10) with coalesce, max_instances=1; `aps_job` as interval jobs.
"""

import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bench_workload
import uvicorn
from bench_seed import APS_FUNCTION, APS_JOB_DEFAULTS, POLL_FUNCTION, aps_table
from fastapi import FastAPI
from pydantic import BaseModel


class SubmitRequest(BaseModel):
    data: dict[str, Any] = {}


class DumpRequest(BaseModel):
    path: str


# Submitted polls: the guide's 30 s interval, first attempt 30 s later for both designs
# (APScheduler's interval trigger first fires one interval after it is added), so the
# submits do not add attempts inside a measurement window.
_SUBMIT_INTERVAL = 30.0


_trace: list[tuple[str, float, float, int]] = []


def _install_trace() -> None:
    """Time our engine's database calls (diagnostics for the profile, not the figures)."""
    from fastapi_jobpoller._storage.attempt_store import AttemptStore
    from fastapi_jobpoller._storage.run_store import RunStore

    def traced(cls: Any, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall = time.time()
            started = time.perf_counter()
            value = original(*args, **kwargs)
            elapsed = time.perf_counter() - started
            size = args[1] if name == "write_pending" else value
            try:
                count = len(size)
            except TypeError:
                count = 0
            _trace.append((f"{cls.__name__}.{name}", wall, elapsed, count))
            return value

        setattr(cls, name, wrapper)

    for name in ("claim", "write_pending", "next_due", "renew_leases"):
        traced(AttemptStore, name)
    for name in ("claim_runs", "claim_ticks", "next_due"):
        traced(RunStore, name)


def _ready() -> None:
    print(f"READY {time.time():.6f}", flush=True)


def jobpoller_app(config: dict[str, Any]) -> FastAPI:
    from fastapi_jobpoller import JobPoller

    if config.get("trace"):
        _install_trace()
    poller = JobPoller(
        database_url=config["url"], table_prefix=config["prefix"], **config.get("settings", {})
    )
    if config.get("async_poll"):
        poller.poll_function(name=POLL_FUNCTION)(bench_workload.jobpoller_poll_async)
    else:
        poller.poll_function(name=POLL_FUNCTION)(bench_workload.jobpoller_poll)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with poller:
            _ready()
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/submit")
    async def submit(request: SubmitRequest) -> dict[str, str]:
        poll = await poller.start_poll(
            POLL_FUNCTION, {"i": -1}, interval=_SUBMIT_INTERVAL, delay=_SUBMIT_INTERVAL
        )
        return {"request_id": poll.id, "message": "polling scheduled"}

    _add_dump_route(app)
    return app


def apscheduler_app(config: dict[str, Any]) -> FastAPI:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(url=config["url"], tablename=aps_table(config["prefix"]))
        },
        executors={"default": ThreadPoolExecutor(max_workers=10)},
        job_defaults=APS_JOB_DEFAULTS,
        timezone="UTC",
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        _ready()
        yield
        scheduler.shutdown(wait=False)

    app = FastAPI(lifespan=lifespan)

    @app.post("/submit")
    async def submit(request: SubmitRequest) -> dict[str, str]:
        # As in the guide: a synchronous add_job inside an async endpoint.
        request_id = str(uuid.uuid4())
        scheduler.add_job(
            APS_FUNCTION,
            trigger="interval",
            seconds=_SUBMIT_INTERVAL,
            id=request_id,
            args=[-1],
            replace_existing=True,
        )
        return {"request_id": request_id, "message": "polling scheduled"}

    _add_dump_route(app)
    return app


def _add_dump_route(app: FastAPI) -> None:
    @app.post("/bench/dump")
    def dump(request: DumpRequest) -> dict[str, int]:
        path = Path(request.path)
        if _trace:
            path.with_suffix(".trace.json").write_text(json.dumps(_trace))
        return {"attempts": bench_workload.dump(path)}


def main() -> None:
    config: dict[str, Any] = json.loads(sys.argv[1])
    # Warnings and errors of both designs, with their level, for run.py's log scan.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import fastapi_jobpoller

    print(f"library: {fastapi_jobpoller.__file__}", file=sys.stderr, flush=True)
    if config["design"] == "jobpoller":
        app = jobpoller_app(config)
    else:
        app = apscheduler_app(config)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(config["port"]),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
