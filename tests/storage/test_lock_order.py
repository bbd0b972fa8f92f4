"""No two statements of the engine deadlock: lease renewal and the write-back of outcomes
lock the poll rows they share in one order (PostgreSQL and MariaDB)."""

import functools
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller._storage.attempt_store import AttemptStore
from fastapi_jobpoller._storage.database import Database
from fastapi_jobpoller._storage.tables import utcnow
from tests.conftest import MYSQL_URL_ENV, POSTGRESQL_URL_ENV, server_url
from tests.helpers import stored_poll

POLLS = 400
ROUNDS = 12


@pytest.fixture(
    params=[
        pytest.param(POSTGRESQL_URL_ENV, marks=pytest.mark.postgresql),
        pytest.param(MYSQL_URL_ENV, marks=pytest.mark.mysql),
    ]
)
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    url = server_url(request.param)
    database = Database(url, table_prefix=f"lk{uuid.uuid4().hex[:8]}_")
    database.create_schema()
    try:
        yield database
    finally:
        database.tables.metadata.drop_all(database.engine)
        database.dispose()


def deadlocks(database: Database) -> int:
    """Return how many deadlocks the server broke (PostgreSQL: in this database)."""
    with database.engine.connect() as connection:
        if database.dialect_name == "postgresql":
            connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            return int(
                connection.execute(
                    sa.text(
                        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                    )
                ).scalar_one()
            )
        row = connection.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")).one()
        return int(row[1])


def test_renewal_and_write_back_of_shared_rows_never_deadlock(database: Database) -> None:
    store = AttemptStore(database)
    ids = [uuid.uuid4().hex for _ in range(POLLS)]
    with database.transaction() as connection:
        connection.execute(sa.insert(database.tables.polls), [stored_poll(i) for i in ids])
    before = deadlocks(database)
    failures: list[BaseException] = []
    rng = random.Random(7)

    def run(work: Any) -> None:
        try:
            work()
        except BaseException as error:
            failures.append(error)

    for _ in range(ROUNDS):
        now = utcnow() + timedelta(hours=1)
        claimed = store.claim(
            worker="w", now=now, lease_until=now + timedelta(minutes=5), limit=POLLS
        ).attempts
        updates = [
            {
                "id": row["id"],
                "attempts": row["attempts"],
                "new_attempts": row["attempts"],
                "consecutive_errors": 0,
                "next_poll_at": now - timedelta(hours=2),
                "progress": None,
                "error": None,
                "updated_at": now,
            }
            for row in rng.sample(claimed, len(claimed))
        ]
        renewing = rng.sample(ids, len(ids))
        lease_until = now + timedelta(minutes=10)
        renew = functools.partial(store.renew_leases, renewing, worker="w", lease_until=lease_until)
        write = functools.partial(store.write_pending, updates, worker="w")
        threads = [threading.Thread(target=run, args=(work,)) for work in (renew, write)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    threading.Event().wait(1.0)  # the server counts a deadlock when it reports its stats
    assert deadlocks(database) == before, "the server had to break a deadlock"


def test_a_write_that_loses_a_deadlock_is_run_again_and_lands(database: Database) -> None:
    """Another transaction (not the engine's) locks rows in the other order: the server
    breaks the deadlock by rolling the engine's write back, and the write runs again."""
    store = AttemptStore(database)
    polls = database.tables.polls
    first, second = sorted(uuid.uuid4().hex for _ in range(2))
    # Rows the other transaction changes first, so that it weighs more than the write and
    # MariaDB rolls the write back rather than it.
    ballast = [uuid.uuid4().hex for _ in range(50)]
    with database.transaction() as connection:
        rows = [stored_poll(i) for i in (first, second, *ballast)]
        connection.execute(sa.insert(polls), rows)
    now = utcnow() + timedelta(hours=1)
    claimed = store.claim(worker="w", now=now, lease_until=now + timedelta(minutes=5), limit=2)
    updates = [
        {
            "id": row["id"],
            "attempts": row["attempts"],
            "new_attempts": row["attempts"],
            "consecutive_errors": 0,
            "next_poll_at": now,
            "progress": "written",
            "error": None,
            "updated_at": now,
        }
        for row in claimed.attempts
        if row["id"] in (first, second)
    ]
    assert len(updates) == 2
    before = deadlocks(database)
    failures: list[BaseException] = []
    writing = threading.Thread(
        target=lambda: _catching(failures, lambda: store.write_pending(updates, worker="w"))
    )
    with database.engine.connect() as other:
        with other.begin():
            # One by one, by key: an IN list over a small table may scan (and lock) all.
            for row_id in ballast:
                other.execute(sa.update(polls).where(polls.c.id == row_id).values(error="o"))
            other.execute(sa.update(polls).where(polls.c.id == second).values(error="o"))
            writing.start()
            time.sleep(0.5)  # the write holds the first row and waits for the second
            other.execute(sa.update(polls).where(polls.c.id == first).values(error="o"))
        writing.join(timeout=60)
    assert failures == []
    time.sleep(1.0)  # the server counts a deadlock when it reports its stats
    assert deadlocks(database) > before, "no deadlock happened: the test proves nothing"
    with database.engine.connect() as connection:
        written = connection.execute(
            sa.select(polls.c.progress, polls.c.lease_owner).where(
                polls.c.id.in_(updates_ids(updates))
            )
        ).all()
    assert [tuple(row) for row in written] == [("written", None), ("written", None)]


def updates_ids(updates: list[dict[str, Any]]) -> list[str]:
    return [update["id"] for update in updates]


def _catching(failures: list[BaseException], work: Any) -> None:
    try:
        work()
    except BaseException as error:
        failures.append(error)
