"""Submit work to a slow outside service, then follow it with a persisted poll.

The seed guide's "Full FastAPI Integration Example", rebuilt on fastapi-jobpoller:
instead of an interval job per request that must remove itself, each request gets a
poll that ends when the service says so, survives restarts, and runs once however many
workers share the database.

    JOBPOLLER_API_KEY=change-me-to-a-long-secret python examples/seed_integration.py

Settings come from `JOBPOLLER_*` variables; by default the database is `jobpoller.db`
in the working directory, and polls run every 30 seconds.
"""

import logging
import os
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from fastapi_jobpoller import (
    Done,
    Failed,
    InvalidStateError,
    JobPoller,
    Pending,
    PollInfo,
    PollNotFoundError,
    PollState,
    mount_scheduler,
)

logger = logging.getLogger("seed_integration")


class FakeTransferService:
    """Stands in for the external system: a transfer completes after a few status checks.

    It is in-process and deterministic, so the example runs anywhere: a transfer of
    `size_mb` megabytes needs one check per 100 MB (at least one).
    """

    def __init__(self) -> None:
        self._checks_left: dict[str, int] = {}

    def start(self, data: dict[str, Any], size_mb: int) -> str:
        transfer_id = uuid.uuid4().hex
        self._checks_left[transfer_id] = max(1, size_mb // 100)
        return transfer_id

    def status(self, transfer_id: str) -> str:
        if transfer_id not in self._checks_left:
            return "UNKNOWN"
        self._checks_left[transfer_id] -= 1
        return "COMPLETED" if self._checks_left[transfer_id] <= 0 else "RUNNING"


service = FakeTransferService()
# Settings (database, API key, intervals) are read from JOBPOLLER_* variables.
poller = JobPoller()


@poller.poll_function()
def check_transfer(transfer_id: str) -> Pending | Done | Failed:
    """One status check: the poll ends when the transfer does."""
    state = service.status(transfer_id)
    if state == "COMPLETED":
        return Done({"transfer_id": transfer_id})
    if state == "UNKNOWN":
        # The fake forgets its transfers when the process restarts; a real one would not.
        return Failed(f"the service does not know transfer {transfer_id}")
    return Pending(progress=state)


@poller.callback()
def announce(poll: PollInfo) -> None:
    """Runs once when a transfer's poll ends: where the seed guide publishes to Kafka."""
    logger.info("transfer request %s ended: %s", poll.id, poll.state.value)


app = FastAPI(title="Transfers")
# The management API (/jobpoller/...) answers only to JOBPOLLER_API_KEY.
mount_scheduler(app, poller)


class SubmitRequest(BaseModel):
    data: dict[str, Any]
    size_mb: int = Field(default=100, ge=1)


class SubmitResponse(BaseModel):
    request_id: str
    message: str


class TransferStatus(BaseModel):
    request_id: str
    state: PollState
    checks: int


@app.post("/submit", response_model=SubmitResponse, status_code=201)
async def submit(request: SubmitRequest) -> SubmitResponse:
    request_id = uuid.uuid4().hex
    transfer_id = service.start(request.data, request.size_mb)
    # The request id is the poll id: a retried submit with the same id would not start
    # a second poll.
    await poller.start_poll(
        "check_transfer",
        {"transfer_id": transfer_id},
        poll_id=request_id,
        callbacks=("announce",),
    )
    return SubmitResponse(request_id=request_id, message="Submitted; polling has begun.")


@app.get("/transfers", response_model=list[TransferStatus])
async def list_transfers() -> list[TransferStatus]:
    polls = await poller.list_polls(function="check_transfer")
    return [TransferStatus(request_id=p.id, state=p.state, checks=p.attempts) for p in polls]


@app.delete("/transfers/{request_id}", response_model=TransferStatus)
async def cancel_transfer(request_id: str) -> TransferStatus:
    try:
        poll = await poller.cancel_poll(request_id)
    except PollNotFoundError:
        raise HTTPException(404, "no such transfer request") from None
    except InvalidStateError:
        raise HTTPException(409, "this transfer request has already ended") from None
    return TransferStatus(request_id=poll.id, state=poll.state, checks=poll.attempts)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
