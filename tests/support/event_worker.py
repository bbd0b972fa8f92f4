"""A worker process for tests/processes/test_events_across_processes.py (a program).

Run it from the repository root as `python -m tests.support.event_worker --events TABLE
--calls TABLE`. Every setting comes from `JOBPOLLER_*` environment variables. Like
`tests/support/process_worker.py` it registers functions that write their calls to a
ledger table of their own, prints `READY <pid> <worker id>`, carries out JSON commands
read on stdin (one a line, one answer line each), and stops on SIGTERM with an ordinary
shutdown, printing `STOPPED`. Besides, a `def` listener writes every engine event this
process emits to the events table, on a connection of its own: that is what the test
counts.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

import sqlalchemy as sa

from fastapi_jobpoller import Done, Event, IntervalTrigger, JobPoller, Pending, PollInfo
from tests.support.process_worker import Ledger

__all__ = ["events_table"]


def events_table(name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """Return the events ledger: one row per event a listener received."""
    return sa.Table(
        name,
        metadata or sa.MetaData(),
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(191), nullable=False),
        sa.Column("poll_id", sa.String(191), nullable=True),
        sa.Column("job_id", sa.String(191), nullable=True),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("callback", sa.String(191), nullable=True),
    )


class EventLedger:
    """The listener: appends each event to the events table."""

    def __init__(self, url: str, table: str) -> None:
        self._engine = sa.create_engine(url, pool_size=1, max_overflow=0)
        self._table = events_table(table)
        self._pid = os.getpid()

    def __call__(self, event: Event) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                sa.insert(self._table).values(
                    event=event.type.value,
                    pid=self._pid,
                    worker=event.worker_id,
                    poll_id=event.poll_id,
                    job_id=event.job_id,
                    run_id=event.run_id,
                    attempt=event.attempt,
                    outcome=event.outcome,
                    callback=event.details.get("callback"),
                )
            )

    def dispose(self) -> None:
        self._engine.dispose()


def register_functions(poller: JobPoller, calls: Ledger) -> None:
    """Register the functions the test runs; each records its calls in the calls ledger."""

    @poller.poll_function()
    def count_to(key: str, finish_after: int) -> Pending | Done:
        count = calls.record(key, "call")
        if count >= finish_after:
            return Done({"calls": count})
        return Pending(progress=count)

    @poller.callback()
    def fails_first(poll: PollInfo) -> None:
        if calls.record(poll.id, "callback") == 1:
            raise RuntimeError("first delivery fails")

    @poller.job_function()
    def tick(key: str) -> None:
        calls.record(key, "tick")


async def run_command(poller: JobPoller, command: dict[str, Any]) -> str:
    """Carry out one command and return the answer line."""
    op = command["op"]
    if op == "submit":
        for number in range(command["count"]):
            poll_id = f"{command['id_prefix']}{number:04d}"
            await poller.start_poll(
                "count_to",
                {"key": poll_id, "finish_after": command["finish_after"]},
                poll_id=poll_id,
                **command.get("options", {}),
            )
        return f"SUBMITTED {command['count']}"
    if op == "add_job":
        job = await poller.add_job(
            "tick",
            IntervalTrigger(seconds=command["seconds"]),
            arguments={"key": command["job_id"]},
            job_id=command["job_id"],
        )
        return f"ADDED {job.id}"
    if op == "pause_job":
        await poller.pause_job(command["job_id"])
        return "PAUSED"
    if op == "remove_job":
        await poller.remove_job(command["job_id"])
        return "REMOVED"
    raise ValueError(f"unknown command {op!r}")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _read_commands(loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[str]") -> None:
    for line in sys.stdin:
        if line.strip():
            loop.call_soon_threadsafe(queue.put_nowait, line)


async def serve(events_name: str, calls_name: str) -> None:
    """Run the poller until SIGTERM, carrying out commands read from stdin."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    commands: asyncio.Queue[str] = asyncio.Queue()
    poller = JobPoller()  # every setting from JOBPOLLER_* env vars
    url = poller.settings.database_url
    calls = Ledger(url, calls_name, connections=poller.settings.thread_pool_size)
    recorder = EventLedger(url, events_name)
    register_functions(poller, calls)
    poller.add_listener(recorder)
    try:
        async with poller:
            threading.Thread(target=_read_commands, args=(loop, commands), daemon=True).start()
            _say(f"READY {os.getpid()} {poller.worker_id}")
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                next_command = asyncio.ensure_future(commands.get())
                await asyncio.wait({stopping, next_command}, return_when=asyncio.FIRST_COMPLETED)
                if not next_command.done():
                    next_command.cancel()
                    break
                _say(await run_command(poller, json.loads(next_command.result())))
    finally:
        calls.dispose()
        recorder.dispose()
    _say("STOPPED")


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", required=True, help="table of the events ledger")
    parser.add_argument("--calls", required=True, help="table of the calls ledger")
    options = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    asyncio.run(serve(options.events, options.calls))


if __name__ == "__main__":
    main()
