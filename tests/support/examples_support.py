"""Helpers for tests/examples/: import an example (examples/*.py) afresh, with its settings.

An example builds its `JobPoller` at import, reading the `JOBPOLLER_*` variables then,
so each test sets the environment first and imports the file as a new module.
"""

import importlib.util
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import pytest

from fastapi_jobpoller import JobPoller, JobPollerSettings
from tests.helpers import REPOSITORY

EXAMPLES = REPOSITORY / "examples"
ADMIN_KEY = "examples-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
# Generous bound for waits on work that takes a fraction of a second; never a speed check.
WAIT_SECONDS = 30.0

T = TypeVar("T")


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a new module, reading the environment as it is now."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clear_settings_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every JOBPOLLER_* setting a developer's shell may hold."""
    for name in JobPollerSettings.model_fields:
        monkeypatch.delenv(f"JOBPOLLER_{name.upper()}", raising=False)


def set_example_environment(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    table_prefix: str,
    **settings: str | None,
) -> None:
    """Point the examples at the test's database, with quick engine settings.

    Every `JOBPOLLER_*` variable a developer's shell may hold is removed first; a setting
    given as None stays unset.
    """
    clear_settings_environment(monkeypatch)
    values = {
        "database_url": database_url,
        "table_prefix": table_prefix,
        "api_key": ADMIN_KEY,
        "idle_wait_seconds": "0.02",
        "default_poll_interval": "0.02",
        "shutdown_grace_seconds": "2",
        **settings,
    }
    for name, value in values.items():
        if value is not None:
            monkeypatch.setenv(f"JOBPOLLER_{name.upper()}", value)


def poller_of(module: ModuleType) -> JobPoller:
    poller = module.poller
    assert isinstance(poller, JobPoller)
    return poller


def eventually(check: Callable[[], T | None], *, what: str) -> T:
    """Call `check` until it returns something other than None, for up to WAIT_SECONDS."""
    give_up_at = time.monotonic() + WAIT_SECONDS
    while True:
        value = check()
        if value is not None:
            return value
        assert time.monotonic() < give_up_at, f"gave up waiting for {what}"
        time.sleep(0.02)
