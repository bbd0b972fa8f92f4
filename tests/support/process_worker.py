"""A worker process for tests/processes/test_processes.py (a program, not a test module).

Run it as `python tests/support/process_worker.py [--ledger-table NAME]`. Every setting
comes from `JOBPOLLER_*` environment variables, read by `JobPollerSettings` as in a real
deployment.
It registers the functions below, starts a `JobPoller`, prints `READY <pid>`, and then:

- reads JSON commands on stdin, one a line, and answers each on stdout:
  `{"op": "submit", "function": ..., "count": N, "id_prefix": ..., "arguments": {...},
  "options": {...}}` starts N polls through the public `start_poll` (answer `SUBMITTED N`);
  `{"op": "add_job", "function": ..., "job_id": ..., "seconds": S, ...}` adds an interval
  job through `add_job` (answer `ADDED <job id>`);
- stops on SIGTERM with an ordinary `shutdown()` and prints `STOPPED`.

Log records of level WARNING and above go to stderr as `LEVEL logger: message`.

Each call of a registered function is written to a ledger table by the function itself,
on its own connection, independent of the library's tables: that is what the tests count.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fastapi_jobpoller import Done, IntervalTrigger, JobPoller, Pending

__all__ = ["LEDGER_SUFFIX", "ledger_table"]

LEDGER_SUFFIX = "ledger"


def ledger_table(name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """Return the ledger table: one row per call (or per call start/end) of a function."""
    return sa.Table(
        name,
        metadata or sa.MetaData(),
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        # The poll id or job id the call was for.
        sa.Column("key", sa.String(191), nullable=False, index=True),
        # "call", "start", "end" or "tick".
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        # How many rows of this key and kind the ledger held, this one included.
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


class Ledger:
    """Writes the ledger from inside the functions, on a connection pool of its own."""

    def __init__(self, url: str, table: str, *, connections: int) -> None:
        self._engine = sa.create_engine(url, pool_size=connections, max_overflow=0)
        self._table = ledger_table(table)
        self._pid = os.getpid()

    def record(self, key: str, kind: str) -> int:
        """Append one row for `key` and return its number among the rows of that kind."""
        table = self._table
        count = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(table.c.key == key, table.c.kind == kind)
            .scalar_subquery()
        )
        row = sa.select(
            sa.literal(key),
            sa.literal(kind),
            sa.literal(self._pid),
            count + 1,
            sa.literal(datetime.now(UTC), sa.DateTime(timezone=True)),
        )
        statement = (
            sa.insert(table)
            .from_select(["key", "kind", "pid", "seq", "at"], row)
            .returning(table.c.seq)
        )
        with self._engine.begin() as connection:
            return int(connection.execute(statement).scalar_one())

    def dispose(self) -> None:
        """Close the ledger's connections."""
        self._engine.dispose()


def register_functions(poller: JobPoller, ledger: Ledger) -> None:
    """Register the functions the tests run; each records its calls in the ledger."""

    @poller.poll_function()
    def count_to(key: str, finish_after: int) -> Pending | Done:
        """Finish once the ledger holds `finish_after` calls for this poll."""
        calls = ledger.record(key, "call")
        if calls >= finish_after:
            return Done({"pid": os.getpid(), "calls": calls})
        return Pending(progress=calls)

    @poller.poll_function()
    def slow_first(key: str, first_call_seconds: float) -> Done:
        """Finish; the first call for a poll takes `first_call_seconds` first.

        The ledger shows when each call began and ended.
        """
        started = ledger.record(key, "start")
        if started == 1:
            time.sleep(first_call_seconds)
        ledger.record(key, "end")
        return Done({"pid": os.getpid(), "starts": started})

    @poller.poll_function()
    async def wait_first(key: str, first_call_seconds: float) -> Done:
        """`slow_first` as a coroutine: hundreds can be in flight at once."""
        started = await asyncio.to_thread(ledger.record, key, "start")
        if started == 1:
            await asyncio.sleep(first_call_seconds)
        await asyncio.to_thread(ledger.record, key, "end")
        return Done({"pid": os.getpid(), "starts": started})

    @poller.job_function()
    def slow_tick(key: str, first_call_seconds: float) -> None:
        """Record a tick; the first one takes `first_call_seconds`."""
        if ledger.record(key, "tick") == 1:
            time.sleep(first_call_seconds)

    @poller.poll_function()
    def keep_going(key: str) -> Pending:
        """Never finish, and record nothing: load, for the shutdown tests."""
        return Pending(progress=key)

    @poller.job_function()
    def tick(key: str) -> None:
        ledger.record(key, "tick")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _read_commands(loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[str]") -> None:
    # A daemon thread: a blocked read of stdin must not keep the process alive at exit.
    for line in sys.stdin:
        if line.strip():
            loop.call_soon_threadsafe(queue.put_nowait, line)


async def _run_command(poller: JobPoller, command: dict[str, Any]) -> str:
    if command["op"] == "submit":
        for number in range(command["count"]):
            poll_id = f"{command['id_prefix']}{number:05d}"
            arguments = {"key": poll_id, **command["arguments"]}
            await poller.start_poll(
                command["function"], arguments, poll_id=poll_id, **command.get("options", {})
            )
        return f"SUBMITTED {command['count']}"
    if command["op"] == "add_job":
        job = await poller.add_job(
            command["function"],
            IntervalTrigger(seconds=command["seconds"]),
            arguments={"key": command["job_id"], **command.get("arguments", {})},
            job_id=command["job_id"],
            **command.get("job_options", {}),
        )
        return f"ADDED {job.id}"
    raise ValueError(f"unknown command {command['op']!r}")


async def serve(ledger_table_name: str | None) -> None:
    """Run the poller until SIGTERM, carrying out commands read from stdin."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    commands: asyncio.Queue[str] = asyncio.Queue()
    poller = JobPoller()  # every setting from JOBPOLLER_* env vars
    settings = poller.settings
    ledger = Ledger(
        settings.database_url,
        ledger_table_name or settings.table_prefix + LEDGER_SUFFIX,
        connections=settings.thread_pool_size,
    )
    register_functions(poller, ledger)
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
                _say(await _run_command(poller, json.loads(next_command.result())))
    finally:
        ledger.dispose()
    _say("STOPPED")


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ledger-table", default=None, help="default: <table prefix>ledger")
    options = parser.parse_args()
    # The library configures no logging; this program does, so the tests can read it.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    asyncio.run(serve(options.ledger_table))


if __name__ == "__main__":
    main()
