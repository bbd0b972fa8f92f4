"""Web processes that only submit, and worker processes that run the engine.

One module serves both roles. The web processes run with JOBPOLLER_RUN_ENGINE=false:
    JOBPOLLER_RUN_ENGINE=false uvicorn examples.split_worker:app --workers 4
and the engine runs in as many worker processes as you like, on any host that reaches the
database:
    jobpoller worker examples.split_worker:poller

The web processes register no function here: they accept a poll of `check_render`
because a live worker registers it (the worker registry says so), and refuse a name that
no live process registers.
"""

import os
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI

from fastapi_jobpoller import Done, JobPoller, Pending, mount_scheduler

poller = JobPoller()  # JOBPOLLER_* settings, read now

if poller.settings.run_engine:  # only the processes that run the work need the code
    renders: dict[str, int] = {}

    @poller.poll_function()
    def check_render(render_id: str) -> Pending | Done:
        # Stands in for asking a render farm how a render is going.
        renders[render_id] = renders.get(render_id, 0) + 1
        if renders[render_id] < 3:
            return Pending(progress=f"{renders[render_id] * 33}%")
        return Done(result={"render_id": render_id, "worker_pid": os.getpid()})


app = FastAPI()
mount_scheduler(app, poller)


@app.post("/renders", status_code=202)
async def start_render() -> dict[str, str]:
    render_id = uuid.uuid4().hex[:12]
    await poller.start_poll(
        "check_render", {"render_id": render_id}, poll_id=render_id, interval=0.2
    )
    return {"render_id": render_id, "poll_id": render_id}


@app.get("/renders/{poll_id}")
async def render_status(poll_id: str) -> dict[str, Any]:
    poll = await poller.get_poll(poll_id)
    return {"state": poll.state, "progress": poll.progress, "result": poll.result}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
