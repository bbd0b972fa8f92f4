"""Polls end to end through `JobPoller`: `_poll_methods.py`, `_engine/poll_runner.py`.

Behaviour decided inside one process (which executor runs a function, concurrency limits,
attempt timeouts, checking what a function returned, refusals at submit) runs no query
that differs between databases, so it is tested on SQLite alone (`sqlite_only`);
everything that reads or writes poll rows runs on every database.
"""
