"""What every part of `JobPoller` shares: settings, registry, events, stores, checks."""

import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import anyio.to_thread
from pydantic import ValidationError

from .config import JobPollerSettings
from .database import Database
from .dispatcher import Dispatcher
from .events import Event, EventBus, EventType, Listener
from .exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentsError,
    NotRunningError,
    PayloadTooLargeError,
)
from .history import HistoryStore
from .job_store import JobStore
from .models import Trigger
from .poll_store import PollStore
from .registry import Registry

__all__ = ["JobDeclaration", "PollerCore", "check_id", "check_page", "default", "in_thread"]

F = TypeVar("F", bound=Callable[..., Any])
L = TypeVar("L", bound=Listener)
T = TypeVar("T")

# Ids are stored in VARCHAR(191) columns.
_MAX_ID_LENGTH = 191


def check_id(kind: str, value: str) -> str:
    """Return `value` if it can be stored as an id.

    Raises:
        InvalidArgumentsError: It is empty, too long, padded, or holds a NUL character
            (which PostgreSQL cannot store in a text column).
    """
    if not value or len(value) > _MAX_ID_LENGTH or value.strip() != value or "\x00" in value:
        raise InvalidArgumentsError(
            f"a {kind} id must be 1 to {_MAX_ID_LENGTH} characters without surrounding "
            "spaces or NUL characters"
        )
    return value


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


class PollerCore:
    """Settings, registration, listeners and the started engine's parts."""

    _polls: PollStore
    _jobs: JobStore
    _history: HistoryStore

    def __init__(self, settings: JobPollerSettings | None = None, /, **overrides: Any) -> None:
        try:
            if settings is None:
                settings = JobPollerSettings(**overrides)
            elif overrides:
                settings = JobPollerSettings(**{**settings.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings: {exc}") from None
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry = Registry()
        self._events = EventBus()
        self._database: Database | None = None
        self._dispatcher: Dispatcher | None = None
        self._schema_ready = False
        # Jobs declared with `declare_job`, applied at every start.
        self._declared_jobs: dict[str, JobDeclaration] = {}

    # -- registration ----------------------------------------------------------------

    def poll_function(
        self,
        name: str | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register a function that checks on outside work and returns an outcome.

        It returns `Pending(...)`, `Done(...)` or `Failed(...)`; an exception counts as
        a transient error. Its parameters, with their type hints, define the JSON
        arguments a poll of it accepts.

        Args:
            name: The stable name stored with each poll (default: the function's name).
            executor: Where a `def` function runs: "thread" (default) or "process".
            max_concurrency: Most attempts of this function running at once here.
        """

        def register(func: F) -> F:
            self._registry.register(
                "poll", func, name=name, executor=executor, max_concurrency=max_concurrency
            )
            return func

        return register

    def job_function(
        self,
        name: str | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register a function that scheduled jobs can run; same arguments as above."""

        def register(func: F) -> F:
            self._registry.register(
                "job", func, name=name, executor=executor, max_concurrency=max_concurrency
            )
            return func

        return register

    def callback(self, name: str | None = None) -> Callable[[F], F]:
        """Register a terminal callback, called with the final `PollInfo` of a poll."""

        def register(func: F) -> F:
            self._registry.register("callback", func, name=name)
            return func

        return register

    def function_names(self, kind: Literal["poll", "job", "callback"]) -> list[str]:
        """Return the names registered for one kind of function."""
        return self._registry.names(kind)

    # -- listeners -------------------------------------------------------------------

    def add_listener(self, listener: Listener, *types: EventType | str) -> None:
        """Call `listener` with every `Event` of the given types (all if none given).

        `async def` listeners are awaited, `def` ones run on a thread; either way they
        run off the engine's path, and an exception is logged, never raised.
        """
        self._events.subscribe(listener, [EventType(t) for t in types])

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        self._events.unsubscribe(listener)

    def on(self, *types: EventType | str) -> Callable[[L], L]:
        """Decorator form of `add_listener`."""

        def subscribe(listener: L) -> L:
            self.add_listener(listener, *types)
            return listener

        return subscribe

    def _emit(self, event_type: EventType, **fields: Any) -> None:
        if self._events.wants(event_type):
            self._events.emit(
                Event(type=event_type, at=datetime.now(UTC), worker_id=self.worker_id, **fields)
            )

    # -- shared checks ---------------------------------------------------------------

    def _arguments(
        self, kind: Literal["poll", "job"], function: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Validate arguments against the registered function and the size limit."""
        stored = self._registry.get(kind, function).validate_arguments(arguments)
        size = len(json.dumps(stored, separators=(",", ":")).encode())
        if size > self.settings.max_arguments_bytes:
            raise PayloadTooLargeError(
                f"arguments take {size} bytes as JSON; the limit is "
                f"{self.settings.max_arguments_bytes} (max_arguments_bytes)"
            )
        return stored

    def _require_running(self) -> Dispatcher:
        if self._dispatcher is None:
            raise NotRunningError("start the poller first (`async with poller:`)")
        if not self._schema_ready:
            raise DatabaseUnavailableError(
                "the database has not been reachable since this process started"
            )
        return self._dispatcher
