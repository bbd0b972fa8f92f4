"""Fixtures of the process tests: a shared PostgreSQL database and its worker processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.worker_processes import (
    SharedDatabase,
    StartWorkers,
    shared_database_at,
    workers_started,
)


@pytest.fixture
def shared_database(postgresql_url: str) -> Iterator[SharedDatabase]:
    """A fresh prefix in the PostgreSQL test database; every table dropped afterwards."""
    with shared_database_at(postgresql_url) as database:
        yield database


@pytest.fixture
def start_workers(shared_database: SharedDatabase, tmp_path: Path) -> Iterator[StartWorkers]:
    """Start worker processes on the shared database; each one is killed at the end."""
    with workers_started(shared_database, tmp_path) as start:
        yield start
