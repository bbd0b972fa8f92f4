"""Observability: the poller's events in your own log and in a table of your own.

Settings come from JOBPOLLER_* env vars. The audit table lives in the app's own database,
AUDIT_DATABASE_URL (by default ./audit.db), not in the library's tables.
"""

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from fastapi_jobpoller import Done, Event, EventType, Failed, JobPoller, Pending, mount_scheduler

# -- 1. Your log: every record of the library carries structured fields ---------------

# The fields engine events set on their log records (`extra`), in the order shown.
FIELDS = (
    "event",
    "poll_id",
    "job_id",
    "run_id",
    "function",
    "attempt",
    "scheduled_at",
    "duration",
    "outcome",
    "error",
)


class FieldsFormatter(logging.Formatter):
    """Append `name=value` for each structured field a record carries."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        values = {name: getattr(record, name, None) for name in FIELDS}
        fields = " ".join(
            f"{name}={value:.6f}" if isinstance(value, float) else f"{name}={value}"
            for name, value in values.items()
            if value is not None
        )
        return f"{line} | {fields}" if fields else line


log_handler = logging.StreamHandler(sys.stderr)
log_handler.setFormatter(FieldsFormatter("%(levelname)s %(name)s: %(message)s"))
library_logger = logging.getLogger("fastapi_jobpoller")  # the library configures no handler
library_logger.addHandler(log_handler)
library_logger.setLevel(logging.INFO)  # quiet while all is well; DEBUG shows every attempt

# -- 2. Your table: an async listener writes the end of every poll to it ----------------

audit_engine = sa.create_engine(os.environ.get("AUDIT_DATABASE_URL", "sqlite:///./audit.db"))
audit_metadata = sa.MetaData()
poll_audit = sa.Table(
    "poll_audit",
    audit_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("poll_id", sa.String(191), nullable=False),
    sa.Column("function", sa.String(191), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
)

poller = JobPoller()  # reads the JOBPOLLER_* settings now


def insert_audit_row(row: dict[str, Any]) -> None:
    with audit_engine.begin() as connection:
        connection.execute(sa.insert(poll_audit).values(**row))


POLL_ENDS = (EventType.POLL_SUCCEEDED, EventType.POLL_FAILED, EventType.POLL_TIMED_OUT)


@poller.on(*POLL_ENDS, EventType.POLL_CANCELLED)
async def audit_poll_end(event: Event) -> None:
    # Listeners run beside the engine: a slow or failing one never holds up a poll.
    row = {
        "poll_id": event.poll_id,
        "function": event.function,
        "outcome": event.type.value.removeprefix("poll_"),
        "attempts": event.attempt,
        "error": event.error,
        "ended_at": event.at,
    }
    await anyio.to_thread.run_sync(insert_audit_row, row)  # blocking I/O off the event loop


# -- 3. Something to watch -----------------------------------------------------------------

checks: dict[str, int] = {}


@poller.poll_function()
async def check_payment(payment_id: str) -> Pending | Done | Failed:
    # Stands in for a payment provider: declined payments fail at once, the others
    # settle at the second check.
    if payment_id.startswith("declined"):
        return Failed(reason="card declined")
    checks[payment_id] = checks.get(payment_id, 0) + 1
    if checks[payment_id] < 2:
        return Pending(progress="authorizing")
    return Done(result={"payment_id": payment_id, "settled": True})


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await anyio.to_thread.run_sync(audit_metadata.create_all, audit_engine)
    yield
    audit_engine.dispose()


app = FastAPI(lifespan=lifespan)
mount_scheduler(app, poller)  # runs the poller inside the lifespan above


@app.post("/payments/{payment_id}/watch", status_code=202)
async def watch(payment_id: str) -> dict[str, str]:
    poll = await poller.start_poll(
        "check_payment", {"payment_id": payment_id}, poll_id=f"payment-{payment_id}", interval=1
    )
    return {"poll_id": poll.id}


@app.get("/audit")
async def audit() -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        with audit_engine.connect() as connection:
            rows = connection.execute(sa.select(poll_audit).order_by(poll_audit.c.id))
            return [dict(row._mapping) for row in rows]

    return await anyio.to_thread.run_sync(read)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
