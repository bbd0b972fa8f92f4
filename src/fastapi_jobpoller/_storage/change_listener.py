"""Cross-process wake-ups through PostgreSQL LISTEN/NOTIFY.

A change that creates due work (a new poll, a cancel, a job added, paused, resumed or
run now) sends a NOTIFY in its own transaction; every process LISTENs on a dedicated
connection and wakes its engine at once, instead of at its next idle check. Elsewhere
(SQLite, MySQL/MariaDB) the idle check alone bounds the delay.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

__all__ = ["ChangeListener"]

logger = logging.getLogger(__name__)

# How long one wait for notifications lasts before checking whether to stop.
_WAIT_SECONDS = 1.0
# TCP keepalives of the listening connection (libpq parameters).
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Pause before reconnecting after the listening connection failed.
_RECONNECT_SECONDS = 2.0


class ChangeListener:
    """A daemon thread that LISTENs on `channel` and calls `on_change(payload)` per wake-up.

    With `presence_lock` (two 31-bit keys), the same connection also holds that
    session-level advisory lock while it lives: the other processes see in `pg_locks`
    that this one is alive, and see it gone the moment its session ends (a kill, a crash),
    not a lease later. `present_since` is when the lock was last taken (monotonic), None
    while it is not held.
    """

    def __init__(
        self,
        url: sa.URL,
        channel: str,
        on_change: Callable[[str], None],
        *,
        presence_lock: tuple[int, int] | None = None,
    ) -> None:
        self._url = url.set(drivername="postgresql")
        self._channel = channel
        self._on_change = on_change
        self._presence_lock = presence_lock
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = False
        self.present_since: float | None = None

    def start(self) -> None:
        """Start listening in the background."""
        self._thread = threading.Thread(target=self._run, name="jobpoller-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (the thread ends within about a second)."""
        self._stop.set()

    def reconnect(self) -> None:
        """Drop the connection and open a new one (it holds the lock no more, says the
        database: the socket died without a word)."""
        self._reconnect.set()

    def _run(self) -> None:
        import psycopg
        from psycopg.conninfo import make_conninfo

        # Keepalives: a connection whose peer vanished is noticed in about 25 s.
        conninfo = make_conninfo(self._url.render_as_string(hide_password=False), **_KEEPALIVES)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f'LISTEN "{self._channel}"')
                    self._take_presence_lock(connection)
                    self.listening = True
                    while not self._stop.is_set() and not self._reconnect.is_set():
                        for notify in connection.notifies(timeout=_WAIT_SECONDS, stop_after=1):
                            self._on_change(notify.payload)
                self._reconnect.clear()
                self.listening = False
                self.present_since = None
            except psycopg.Error as error:
                if self.listening:
                    logger.warning(
                        "lost the LISTEN connection; polling only until it is back: %s",
                        error,
                        extra={"event": "listen_lost"},
                    )
                self.listening = False
                self.present_since = None
                self._stop.wait(_RECONNECT_SECONDS)
        self.listening = False
        self.present_since = None

    def _take_presence_lock(self, connection: Any) -> None:
        if self._presence_lock is None:
            return
        row = connection.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", self._presence_lock
        ).fetchone()
        if row is not None and row[0]:
            self.present_since = time.monotonic()
        else:  # only if another process drew the same key: the heartbeat stands in
            logger.warning(
                "the presence lock %r is held by another session; takeover of this "
                "process's work falls back to its heartbeat",
                self._presence_lock,
                extra={"event": "presence_lock_taken"},
            )
