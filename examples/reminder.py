"""A one-time reminder: a job with a date trigger, run once at its time, then gone.

    python examples/reminder.py

Then `curl -X POST localhost:8000/reminders -H 'Content-Type: application/json'
-d '{"user_id": "u-1", "message": "Meeting in 5 minutes", "in_seconds": 10}'`.
A reminder is stored in the database, so it fires even if the app restarts meanwhile,
and once only however many workers run.
"""

import uuid
from datetime import UTC, datetime, timedelta

import uvicorn
from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, Field

from fastapi_jobpoller import (
    DateTrigger,
    JobNotFoundError,
    JobPoller,
    JobRunState,
    mount_scheduler,
)

# Stands in for a notification service: (user id, message) of each reminder sent.
sent: list[tuple[str, str]] = []

poller = JobPoller()  # reads the JOBPOLLER_* settings now


@poller.job_function()
def send_reminder(user_id: str, message: str) -> str:
    sent.append((user_id, message))
    return f"reminded {user_id}"


app = FastAPI(title="Reminders")
mount_scheduler(app, poller)


class ReminderRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=64)
    message: str = Field(min_length=1, max_length=500)
    in_seconds: float = Field(default=3600, gt=0, le=366 * 86_400)


class Reminder(BaseModel):
    reminder_id: str
    due_at: datetime | None
    sent: bool


@app.post("/reminders", response_model=Reminder, status_code=201)
async def create_reminder(request: ReminderRequest) -> Reminder:
    # An aware time: every worker and host reads the same instant, whatever its zone.
    due_at = datetime.now(UTC) + timedelta(seconds=request.in_seconds)
    job = await poller.add_job(
        "send_reminder",
        DateTrigger(run_date=due_at),
        arguments={"user_id": request.user_id, "message": request.message},
        job_id=f"reminder-{uuid.uuid4().hex}",
    )
    return Reminder(reminder_id=job.id, due_at=job.next_run_at, sent=False)


@app.get("/reminders/{reminder_id}", response_model=Reminder)
async def get_reminder(reminder_id: str) -> Reminder:
    try:
        job = await poller.get_job(reminder_id)
        return Reminder(reminder_id=reminder_id, due_at=job.next_run_at, sent=False)
    except JobNotFoundError:
        pass
    # A date job is removed after its one run, in the transaction that records how the
    # run ended; the run stays in the history.
    runs = await poller.list_job_runs(job_id=reminder_id, limit=1)
    if not runs:
        raise HTTPException(status_code=404, detail="no such reminder")
    # Succeeded, or failed, or missed if no worker was up within the job's misfire
    # grace time after its due time.
    sent = runs[0].state is JobRunState.SUCCEEDED
    return Reminder(reminder_id=reminder_id, due_at=runs[0].scheduled_at, sent=sent)


@app.delete("/reminders/{reminder_id}", status_code=204)
async def cancel_reminder(reminder_id: str) -> Response:
    try:
        await poller.remove_job(reminder_id)
    except JobNotFoundError:
        raise HTTPException(status_code=404, detail="no such reminder, or it was sent") from None
    return Response(status_code=204)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
