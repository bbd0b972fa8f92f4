"""Keeping what the engine holds: lease renewal and the batched write-back of outcomes.

Attempts that leave their poll pending hand their outcome to `queue`; one task writes
the buffer back in batches (fenced by lease owner and attempt count, in `AttemptStore`).
Another task renews the leases of the rows this process works on, including rows whose
outcome still waits in the buffer, so no other process claims them meanwhile.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

from sqlalchemy import exc as sa_exc

from .._storage.attempt_store import AttemptStore
from .._storage.run_store import RunStore
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from ..exceptions import DatabaseUnavailableError
from .threads import run_in

__all__ = ["DATABASE_ERRORS", "InFlight", "WriteBack"]

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (DatabaseUnavailableError, sa_exc.SQLAlchemyError)
"""What a database call of the engine may raise without it being a bug of ours."""

# Pause before renewing leases again after a renewal failed (instead of a third of a
# lease): leases survive an outage of up to about two thirds of `lease_seconds`.
_RENEW_RETRY_SECONDS = 0.5
# Pause before writing outcomes again after a write failed.
_WRITE_RETRY_SECONDS = 1.0

InFlight = Mapping["asyncio.Task[None]", tuple[str, str]]
"""Each task in flight, with the kind ("poll" or "run") and id of the row it holds."""


class WriteBack:
    """The write buffer and lease renewal of one process's engine."""

    def __init__(
        self,
        *,
        settings: JobPollerSettings,
        polls: AttemptStore,
        runs: RunStore,
        database_pool: Executor,
        worker_id: str,
        in_flight: InFlight,
    ) -> None:
        self._settings = settings
        self._polls = polls
        self._runs = runs
        self._database_pool = database_pool
        self._worker_id = worker_id
        self._in_flight = in_flight
        self._pending_writes: list[dict[str, Any]] = []
        self._pending_history: list[dict[str, Any]] = []
        self._writes_waiting = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._closing = False

    def queue(self, update: dict[str, Any], history: dict[str, Any] | None) -> None:
        """Buffer a pending outcome (and its history row, if recorded) for the next batch."""
        self._pending_writes.append(update)
        if history is not None:
            self._pending_history.append(history)
        self._writes_waiting.set()

    async def write_loop(self) -> None:
        """Write the buffer back whenever it has something, retrying through outages,
        until `close`."""
        failing = False
        while not self._closing:
            await self._writes_waiting.wait()
            self._writes_waiting.clear()
            if self._closing:
                return
            try:
                await self.flush()
                failing = False
            except DATABASE_ERRORS as error:
                if not failing:  # once per outage, not once a second
                    logger.warning(
                        "could not write poll outcomes; retrying: %s",
                        error,
                        extra={"event": "outcome_write_failed"},
                    )
                failing = True
                await self._pause(_WRITE_RETRY_SECONDS)
                self._writes_waiting.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once for `close`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed_event.wait(), timeout=seconds)

    async def close(self, write_loop: "asyncio.Task[None]") -> None:
        """Stop `write_loop` between two batches (a batch in flight is written once)."""
        self._closing = True
        self._closed_event.set()
        self._writes_waiting.set()
        await asyncio.gather(write_loop, return_exceptions=True)

    async def flush(self) -> None:
        """Write what the buffer holds now; in an outage it goes back to the buffer.

        If the caller is cancelled meanwhile, the batch is not put back: its transaction
        may commit all the same in the database thread, and it must not be written twice.
        A batch the database refuses (not an outage) is written again row by row, so that
        one refused row is dropped alone (its poll runs again once its lease expires).
        """
        updates, self._pending_writes = self._pending_writes, []
        history, self._pending_history = self._pending_history, []
        if not updates:
            return
        try:
            await self._write(updates, history)
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailableError:
            self._pending_writes[:0] = updates
            self._pending_history[:0] = history
            raise
        except Exception:
            await self._write_one_by_one(updates, history)

    async def _write(self, updates: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
        await run_in(
            self._database_pool,
            self._polls.write_pending,
            updates,
            worker=self._worker_id,
            history=history,
        )

    async def _write_one_by_one(
        self, updates: list[dict[str, Any]], history: list[dict[str, Any]]
    ) -> None:
        for update in updates:
            own = [h for h in history if h["poll_id"] == update["id"]]
            try:
                await self._write([update], own)
            except DatabaseUnavailableError:
                self._pending_writes.append(update)  # the outage: written when it is back
                self._pending_history.extend(own)
                raise
            except Exception as error:
                logger.error(
                    "the outcome of an attempt of poll %r was refused and is dropped; the poll "
                    "runs again when its lease expires: %s",
                    update["id"],
                    error,
                    extra={"event": "outcome_refused", "poll_id": update["id"]},
                )

    async def renew_loop(self) -> None:
        """Extend the leases of everything held, every third of a lease."""
        period = self._settings.lease_seconds / 3
        pause, failing = period, False
        while True:
            await asyncio.sleep(pause)
            pause = period
            if not self._in_flight and not self._pending_writes:
                continue
            try:
                await self._renew()
            except DATABASE_ERRORS as error:
                # Try again soon: the next period could come after the leases expired.
                pause = min(period, _RENEW_RETRY_SECONDS)
                if not failing:
                    logger.warning(
                        "could not renew leases; retrying: %s",
                        error,
                        extra={"event": "lease_renew_failed"},
                    )
                failing = True
            else:
                failing = False

    async def _renew(self) -> None:
        lease_until = utcnow() + timedelta(seconds=self._settings.lease_seconds)
        working = list(self._in_flight.values())
        # Rows whose outcome waits in the write buffer are still held too.
        polls = [row_id for kind, row_id in working if kind == "poll"]
        polls += [update["id"] for update in self._pending_writes]
        runs = [row_id for kind, row_id in working if kind == "run"]
        if polls:
            await run_in(
                self._database_pool,
                self._polls.renew_leases,
                polls,
                worker=self._worker_id,
                lease_until=lease_until,
            )
        if runs:
            await run_in(
                self._database_pool,
                self._runs.renew_leases,
                runs,
                worker=self._worker_id,
                lease_until=lease_until,
            )

    async def hand_back(self) -> None:
        """Write what is buffered, then hand every lease back, even if the write failed."""
        try:
            await self.flush()
        except Exception as error:  # whatever it was, the leases are handed back below
            logger.warning(
                "could not write the last poll outcomes at shutdown; their polls run again: %s",
                error,
                extra={"event": "shutdown_write_failed"},
            )
        try:
            await run_in(self._database_pool, self.release_leases)
        except DATABASE_ERRORS as error:
            logger.warning(
                "could not hand leases back at shutdown; they expire by themselves: %s",
                error,
                extra={"event": "shutdown_release_failed"},
            )

    def release_leases(self) -> None:
        """Hand every row this process holds back at once (at shutdown; blocking)."""
        now = utcnow()
        self._polls.release_leases(worker=self._worker_id, now=now)
        self._runs.release_leases(worker=self._worker_id, now=now)
