"""What every part of `JobPoller` shares: its state (settings, registry, events, stores)
and the checks its poll and job methods both make."""

import json
import os
import socket
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio.to_thread
from pydantic import ValidationError

from ._engine.dispatcher import Dispatcher
from ._engine.event_bus import EventBus
from ._engine.process_presence import NoEngine, ProcessPresence
from ._engine.registry import FunctionKind, Registry
from ._storage.database import Database
from ._storage.history_store import HistoryStore
from ._storage.job_store import JobStore
from ._storage.poll_store import PollStore
from ._storage.quarantine_store import QuarantineStore
from ._storage.run_store import RunStore
from ._storage.tables import ID_LENGTH
from ._storage.worker_store import WorkerStore
from .config import JobPollerSettings
from .events import EventType
from .exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentsError,
    NotRunningError,
    PayloadTooLargeError,
)
from .models import Trigger

__all__ = ["JobDeclaration", "PollerBase", "check_id", "check_page", "default", "in_thread"]

T = TypeVar("T")


def check_id(kind: str, value: str) -> str:
    """Return `value` if it can be stored as an id.

    Raises:
        InvalidArgumentsError: It is empty, too long, padded, or holds a control
            character: a NUL (PostgreSQL cannot store one), a line break (it would forge
            a log line) or a bidirectional override (it would disguise one).
    """
    if not value or len(value) > ID_LENGTH or value.strip() != value:
        raise InvalidArgumentsError(
            f"a {kind} id must be 1 to {ID_LENGTH} characters without surrounding spaces"
        )
    if any(unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS for ch in value):
        raise InvalidArgumentsError(
            f"a {kind} id must not hold control characters (line breaks, NUL, "
            "bidirectional overrides)"
        )
    return value


# Characters that reorder how text is shown (U+061C, U+200E-F, U+202A-E, U+2066-9).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def check_page(limit: int, offset: int) -> None:
    """Refuse a page that is empty or starts before the first item."""
    if limit < 1 or offset < 0:
        raise InvalidArgumentsError("limit must be at least 1 and offset not negative")


def default(value: T | None, fallback: T) -> T:
    """Return `value`, or `fallback` where it is None."""
    return fallback if value is None else value


async def in_thread(function: Callable[[], T]) -> T:
    """Run a blocking database call off the event loop."""
    return await anyio.to_thread.run_sync(function)


@dataclass(frozen=True, slots=True)
class JobDeclaration:
    """A job `declare_job` asked for, created or updated at every start."""

    job_id: str
    function: str
    trigger: Trigger | Mapping[str, Any]
    arguments: Mapping[str, Any] | None
    options: dict[str, Any]


_NO_ENGINE = NoEngine()


class PollerBase:
    """The state of a `JobPoller`; `poller.py` documents the class itself."""

    _polls: PollStore
    _jobs: JobStore
    _runs: RunStore
    _history: HistoryStore
    _quarantine: QuarantineStore
    _workers: WorkerStore

    def __init__(self, settings: JobPollerSettings | None = None, /, **overrides: Any) -> None:
        if isinstance(overrides.get("settings"), JobPollerSettings) and settings is None:
            settings = overrides.pop("settings")  # JobPoller(settings=s), the natural keyword
        try:
            if settings is None:
                settings = JobPollerSettings(**overrides)
            elif overrides:
                # dict(), not model_dump(): the dump hides the database password.
                settings = JobPollerSettings(**{**dict(settings), **overrides})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings: {exc}") from None
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry = Registry()
        self._events = EventBus()
        self._database: Database | None = None
        self._dispatcher: Dispatcher | None = None
        self._presence: ProcessPresence | None = None
        self._started = False
        # What a process with an engine calls itself: the worker command says "worker".
        self._engine_role: Literal["engine", "worker"] = "engine"
        self._schema_ready = False
        # Jobs declared with `declare_job`, applied at every start.
        self._declared_jobs: dict[str, JobDeclaration] = {}

    def _emit(self, event_type: EventType, **fields: Any) -> None:
        self._events.publish(event_type, self.worker_id, **fields)

    # -- shared checks ---------------------------------------------------------------

    def _arguments(
        self, kind: Literal["poll", "job"], function: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Validate arguments against the registered function and the size limit."""
        if arguments is not None and not isinstance(arguments, Mapping):
            raise InvalidArgumentsError(
                "arguments are a mapping of parameter names to values, e.g. "
                f"arguments={{'ticket': 't-1'}}, not a {type(arguments).__name__}: name each "
                "value (APScheduler's args=[...] have no place here)"
            )
        stored = self._registry.stored_arguments(kind, function, arguments)
        size = len(json.dumps(stored, separators=(",", ":")).encode())
        if size > self.settings.max_arguments_bytes:
            raise PayloadTooLargeError(
                f"arguments take {size} bytes as JSON; the limit is "
                f"{self.settings.max_arguments_bytes} (max_arguments_bytes)"
            )
        return stored

    async def _checked_arguments(
        self, kind: Literal["poll", "job"], function: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """`_arguments`, after a look at the registry if only a worker may know `function`."""
        await self._look_up_elsewhere(kind, function)
        return self._arguments(kind, function, arguments)

    async def _look_up_elsewhere(self, kind: FunctionKind, *names: str) -> None:
        """Read the registry now if a name is unknown here and at the last heartbeat: a
        worker that started a moment ago is known at once, not a heartbeat later."""
        if all(self._registry.is_known(kind, name) for name in names):
            return
        within = self.settings.lease_seconds
        self._registry.elsewhere = await in_thread(
            lambda: self._workers.functions_alive(within_seconds=within)
        )

    def _require_running(self) -> Dispatcher | NoEngine:
        if not self._started:
            raise NotRunningError(
                "start the poller first: mount_scheduler(app, poller) runs it with the app; "
                "elsewhere, `async with poller:`"
            )
        if not self._schema_ready:
            raise DatabaseUnavailableError(
                "the database has not been reachable since this process started"
            )
        return self._dispatcher or _NO_ENGINE
