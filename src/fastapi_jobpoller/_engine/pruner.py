"""Pruning: drop run history, attempt history and finished polls past their retention."""

import asyncio
import logging
import random
from concurrent.futures import Executor

from .._storage.history_store import HistoryStore, Retention
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from .threads import run_in
from .write_back import DATABASE_ERRORS

__all__ = ["prune_loop"]

logger = logging.getLogger(__name__)


async def prune_loop(
    settings: JobPollerSettings, history: HistoryStore, database_pool: Executor
) -> None:
    """Prune every `prune_interval_seconds`, forever; a failed round is logged and skipped."""
    retention = Retention(
        max_age_seconds=settings.history_max_age_seconds,
        max_runs_per_job=settings.history_max_runs_per_job,
        max_attempts_per_poll=settings.history_max_attempts_per_poll,
        finished_poll_max_age_seconds=settings.finished_poll_max_age_seconds,
    )
    # Processes started together should not all prune at the same moment.
    await asyncio.sleep(random.uniform(0.1, 1.0) * settings.prune_interval_seconds)
    while True:
        try:
            report = await run_in(database_pool, history.prune, retention, now=utcnow())
            if report.job_runs or report.poll_attempts or report.polls:
                logger.debug(
                    "pruned %d job runs, %d poll attempts, %d finished polls",
                    report.job_runs,
                    report.poll_attempts,
                    report.polls,
                    extra={"event": "history_pruned"},
                )
        except DATABASE_ERRORS as error:
            logger.warning("pruning failed: %s", error, extra={"event": "prune_failed"})
        await asyncio.sleep(settings.prune_interval_seconds)
