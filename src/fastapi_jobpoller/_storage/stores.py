"""Every store of one database, built together: what the facade and the engine share."""

from dataclasses import dataclass

from .attempt_store import AttemptStore
from .database import Database
from .history_store import HistoryStore
from .job_store import JobStore
from .poll_store import PollStore
from .quarantine_store import QuarantineStore
from .run_store import RunStore
from .worker_store import WorkerStore

__all__ = ["Stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """The queries on each table, for one database."""

    database: Database
    polls: PollStore
    attempts: AttemptStore
    jobs: JobStore
    runs: RunStore
    history: HistoryStore
    quarantine: QuarantineStore
    workers: WorkerStore

    @classmethod
    def open(cls, database: Database, *, default_zone: str) -> "Stores":
        """Build the stores of `database`; `default_zone` is for triggers without one."""
        return cls(
            database=database,
            polls=PollStore(database),
            attempts=AttemptStore(database),
            jobs=JobStore(database, default_zone=default_zone),
            runs=RunStore(database, default_zone=default_zone),
            history=HistoryStore(database),
            quarantine=QuarantineStore(database),
            workers=WorkerStore(database),
        )
