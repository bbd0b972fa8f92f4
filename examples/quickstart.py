"""Quickstart: watch an outside job until it ends, and run a job on a schedule.

Settings come from JOBPOLLER_* env vars; by default everything is stored in ./jobpoller.db.
"""

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

from fastapi_jobpoller import (
    Done,
    IntervalTrigger,
    JobConflictError,
    JobPoller,
    Pending,
    PollNotFoundError,
    mount_scheduler,
)

# Stands in for the outside system you would watch (a Spark cluster, a payment
# provider): each external job reports "done" at its third status check.
status_checks: dict[str, int] = {}

poller = JobPoller()  # reads the JOBPOLLER_* settings now


@poller.poll_function()
async def check_external_job(external_id: str) -> Pending | Done:
    # A real check asks the outside system; an exception here counts as a transient error.
    checks = status_checks[external_id] = status_checks.get(external_id, 0) + 1
    if checks < 3:
        return Pending(progress=f"{checks} of 3 checks")
    return Done(result={"external_id": external_id, "rows": 42})


@poller.job_function()
def report_backlog() -> int:
    # A plain `def` runs on a worker thread, so it may block without stalling requests.
    running = sum(1 for checks in status_checks.values() if checks < 3)
    print(f"external jobs still running: {running}")
    return running  # stored as the result of this run


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # mount_scheduler starts the poller only after this code, but adding a job needs it
    # running: start it here; mount_scheduler finds it started and stops it at shutdown.
    async with poller:
        # Every worker process runs this; the first adds the job, the others keep it.
        with contextlib.suppress(JobConflictError):
            await poller.add_job("report_backlog", IntervalTrigger(seconds=2), job_id="backlog")
        yield


app = FastAPI(lifespan=lifespan)
mount_scheduler(app, poller)  # runs the poller with the app; management API at /jobpoller


@app.post("/start", status_code=202)
async def start() -> dict[str, str]:
    external_id = uuid.uuid4().hex  # pretend we just submitted work to the outside system
    poll = await poller.start_poll("check_external_job", {"external_id": external_id}, interval=1)
    return {"poll_id": poll.id}


@app.get("/status/{poll_id}")
async def status(poll_id: str) -> dict[str, Any]:
    try:
        poll = await poller.get_poll(poll_id)
    except PollNotFoundError:  # the library maps its errors only in its own routes
        raise HTTPException(status_code=404, detail="unknown poll id") from None
    return {"state": poll.state, "progress": poll.progress, "result": poll.result}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
