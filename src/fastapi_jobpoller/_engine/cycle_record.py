"""The dispatch loop's record of itself: what `/health` reports, and logs said once.

A cycle that fails is retried; the first failure is logged with its traceback, the same
failure again only counted, and the recovery logged once. An outage of the database is
told apart: the engine waits for the database instead of counting failures.
"""

import logging
import time
from datetime import datetime

from sqlalchemy import exc as sa_exc

from .._storage.tables import utcnow
from .caller import describe

__all__ = ["CycleRecord"]

logger = logging.getLogger("fastapi_jobpoller._engine.dispatcher")


class CycleRecord:
    """How the dispatch cycles of one process went lately."""

    def __init__(self, *, database_ok: bool) -> None:
        self.database_ok = database_ok
        self.last_success_at: datetime | None = None
        self.failed_cycles = 0
        self.last_failure: str | None = None
        self._last_beat = 0.0

    def beat(self) -> None:
        """Note that the loop is alive (a cycle ended, well or not)."""
        self._last_beat = time.monotonic()

    def recent(self, *, stale_after: float) -> bool:
        """Return whether the loop ended a cycle within `stale_after` seconds."""
        return time.monotonic() - self._last_beat < stale_after

    def succeeded(self) -> None:
        """Count a cycle that claimed what was due."""
        self.beat()
        self.last_success_at = utcnow()
        if not self.database_ok:
            logger.warning("database reachable again", extra={"event": "database_available"})
        self.database_ok = True
        if self.failed_cycles:
            logger.warning(
                "dispatch cycles succeed again after %d failed",
                self.failed_cycles,
                extra={"event": "dispatch_recovered", "count": self.failed_cycles},
            )
        self.failed_cycles, self.last_failure = 0, None

    def failed(self, error: Exception) -> None:
        """Count a failed cycle; log it with its traceback once, not at every retry."""
        self.beat()
        reason = describe(error)
        if reason != self.last_failure:
            refused = isinstance(error, sa_exc.SQLAlchemyError)
            logger.error(
                "%s; retrying: %s",
                "a statement of the dispatch cycle failed" if refused else "dispatch cycle failed",
                reason,
                exc_info=error,
                extra={"event": "database_error" if refused else "dispatch_error"},
            )
        self.failed_cycles += 1
        self.last_failure = reason

    def database_down(self, error: BaseException) -> None:
        """Note an outage; logged when it starts."""
        self.beat()
        if self.database_ok:
            logger.error(
                "database unavailable; the engine keeps retrying: %s",
                getattr(error, "reason", error),
                extra={"event": "database_unavailable"},
            )
        self.database_ok = False
