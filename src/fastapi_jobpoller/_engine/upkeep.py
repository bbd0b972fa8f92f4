"""Upkeep: re-check rows set aside, and report jobs that no running process can run.

Every `recheck_seconds`, each process looks at the quarantine records: a row that is gone
loses its record, a row that now passes the checks of `_rules/row_checks.py` is released
(a poll is made due again; a job's claims resume at its stored next tick). The same look
finds jobs and polls overdue by more than a minute whose function neither this process nor
a live process of the worker registry registers. Each is reported once; none is failed:
they run once a process that registers the function starts.
"""

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .._rules.row_checks import job_problem, poll_problem
from .._storage.job_store import JobStore
from .._storage.poll_store import PollStore
from .._storage.poll_store_pg import ACTIVE_STATES
from .._storage.quarantine_store import QuarantineStore
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from ..exceptions import JobNotFoundError
from .registry import Registry
from .threads import run_in
from .write_back import DATABASE_ERRORS

__all__ = ["Upkeep", "UpkeepReport"]

logger = logging.getLogger(__name__)

# A job this late was not claimed by any process: none that runs registers its function
# (claims look for due ticks several times a second).
_UNCLAIMED_AFTER = timedelta(seconds=60)
# Records read per query of a look (every record is looked at, oldest first).
_RECHECK_BATCH = 500


@dataclass(slots=True)
class UpkeepReport:
    """What the last look found, for `/health`."""

    quarantined: int = 0
    released: int = 0
    unclaimed_jobs: dict[str, str] = field(default_factory=dict)
    """Overdue jobs whose function no running process registers: id -> function."""
    unclaimed_polls: dict[str, int] = field(default_factory=dict)
    """Overdue polls whose function no running process registers: function -> count."""


class Upkeep:
    """The periodic look of one process."""

    def __init__(
        self,
        *,
        settings: JobPollerSettings,
        registry: Registry,
        polls: PollStore,
        jobs: JobStore,
        quarantine: QuarantineStore,
        database_pool: Executor,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._polls = polls
        self._jobs = jobs
        self._quarantine = quarantine
        self._database_pool = database_pool
        self.report = UpkeepReport()

    async def loop(self) -> None:
        """Look every `recheck_seconds`, forever; a failed look is logged once and skipped."""
        failing = False
        while True:
            try:
                report = await run_in(self._database_pool, self.look, utcnow())
                self._tell(report)
                self.report, failing = report, False
            except DATABASE_ERRORS as error:
                if not failing:
                    logger.warning(
                        "could not re-check set-aside rows: %s",
                        error,
                        extra={"event": "upkeep_failed"},
                    )
                failing = True
            await asyncio.sleep(self._settings.recheck_seconds)

    def look(self, now: datetime) -> UpkeepReport:
        """Release the set-aside rows found fixed or gone; find unclaimed jobs (blocking)."""
        report = UpkeepReport()
        offset = 0
        while records := self._quarantine.list_records(
            oldest_first=True, limit=_RECHECK_BATCH, offset=offset
        ):
            for record in records:
                kind, row_id = record["kind"], record["row_id"]
                if not self._fixed(kind, row_id, now):
                    offset += 1
                elif kind == "poll":
                    self._polls.release(row_id, now=now)  # record and parking in one transaction
                    report.released += 1
                else:
                    self._quarantine.release(kind, [row_id])
                    report.released += 1
        report.quarantined = sum(self._quarantine.count().values())
        # Known: registered here or by a live process of the worker registry.
        known = self._registry.is_known
        for job in self._jobs.overdue(before=now - _UNCLAIMED_AFTER):
            if not known("job", job["function"]):
                report.unclaimed_jobs[job["id"]] = job["function"]
        overdue = self._polls.overdue_by_function(before=now - _UNCLAIMED_AFTER)
        for function, count in overdue.items():
            if not known("poll", function):
                report.unclaimed_polls[function] = count
        return report

    def _fixed(self, kind: str, row_id: str, now: datetime) -> bool:
        if kind == "poll":
            row = self._polls.get(row_id)
            if row is None:
                return True
            # An ended poll with no callbacks to deliver needs nothing of the engine any more.
            needs_engine = row["state"] in ACTIVE_STATES or row["callbacks_pending"]
            return not needs_engine or poll_problem(row) is None
        try:
            job = self._jobs.get(row_id)
        except JobNotFoundError:
            return True
        return job_problem(job, default_zone=self._settings.timezone, now=now) is None

    def _tell(self, report: UpkeepReport) -> None:
        if report.released:
            logger.warning(
                "%d set-aside rows are usable again and resume",
                report.released,
                extra={"event": "quarantine_released", "count": report.released},
            )
        for job_id, function in report.unclaimed_jobs.items():
            if job_id not in self.report.unclaimed_jobs:
                logger.warning(
                    "job %r is overdue: no running process registers its function %r",
                    job_id,
                    function,
                    extra={"event": "job_unclaimed", "job_id": job_id, "function": function},
                )
        for function, count in report.unclaimed_polls.items():
            if function not in self.report.unclaimed_polls:
                logger.warning(
                    "%d polls of %r are overdue: no running process registers that function",
                    count,
                    function,
                    extra={"event": "poll_unclaimed", "function": function, "count": count},
                )
