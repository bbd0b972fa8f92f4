"""What the library stores: plain JSON, text, numbers and times, never pickles; and a
schema that many processes can create at once."""

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedColumn

from fastapi_jobpoller import Done, IntervalTrigger, JobPoller, PollState
from fastapi_jobpoller._storage.tables import Tables
from tests.conftest import PollerFactory

pytestmark = pytest.mark.anyio

# The tables every release has had; `library_tables` lists all of this release's.
CORE_TABLES = {"polls", "jobs", "job_runs"}
# Column types that hold only data: JSON documents, text, numbers and timestamps.
DATA_TYPES: tuple[type[sa.types.TypeEngine[Any]], ...] = (
    sa.JSON,
    sa.String,  # VARCHAR, TEXT, LONGTEXT (MariaDB's JSON), ...
    sa.Integer,  # also MySQL's TINYINT(1) booleans
    sa.Float,
    sa.Numeric,
    sa.Boolean,
    sa.DateTime,
)
# Names that would betray bytes (pickles or other opaque payloads) in any dialect.
BINARY_MARKERS = ("BLOB", "BYTEA", "BINARY", "PICKLE", "IMAGE", "RAW")


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A separate engine on the test's database, to look at it from outside."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def library_tables(prefix: str) -> set[str]:
    """Return the names, without prefix, of every table the library defines."""
    return {name[len(prefix) :] for name in Tables(prefix).metadata.tables}


def read_columns(engine: sa.Engine, prefix: str) -> dict[str, list[ReflectedColumn]]:
    """Return the reflected columns of each of the library's tables that exists."""
    inspector = sa.inspect(engine)
    names = set(inspector.get_table_names())
    return {
        table: inspector.get_columns(f"{prefix}{table}")
        for table in library_tables(prefix)
        if f"{prefix}{table}" in names
    }


async def test_every_column_holds_json_text_numbers_or_times(
    make_poller: PollerFactory, engine: sa.Engine, table_prefix: str
) -> None:
    async with make_poller():
        pass

    columns = read_columns(engine, table_prefix)

    assert CORE_TABLES <= set(columns) == library_tables(table_prefix)
    for table, table_columns in columns.items():
        assert table_columns, table
        for column in table_columns:
            kind = column["type"]
            described = f"{table}.{column['name']}: {kind!r}"
            assert isinstance(kind, DATA_TYPES), described
            assert not isinstance(kind, sa.LargeBinary | sa.PickleType), described
            assert not any(marker in repr(kind).upper() for marker in BINARY_MARKERS), described


async def test_timestamps_keep_their_microseconds(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    async def later() -> None:
        return None

    start = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    async with poller:
        await poller.add_job("later", IntervalTrigger(hours=1, start_date=start), job_id="later")
        job = await poller.get_job("later")

    assert job.next_run_at == start
    assert job.next_run_at.tzinfo is not None
    assert job.created_at.utcoffset() == timedelta(0)


def raw_text(engine: sa.Engine, table: str, columns: list[str]) -> list[dict[str, str | None]]:
    """Read columns as the text the database holds, without the library's column types."""
    query = sa.select(*(sa.cast(sa.column(name), sa.Text).label(name) for name in columns))
    with engine.connect() as connection:
        rows = connection.execute(query.select_from(sa.table(table))).all()
    return [dict(row._mapping) for row in rows]


async def test_stored_polls_and_jobs_are_plain_json_naming_their_functions(
    make_poller: PollerFactory, engine: sa.Engine, table_prefix: str
) -> None:
    poller = make_poller()

    @poller.poll_function()
    async def check_export(export_id: str, pages: list[int]) -> Done:
        return Done(result={"export_id": export_id, "pages": len(pages)})

    @poller.job_function()
    async def cleanup(older_than_days: int) -> None:
        return None

    async with poller:
        poll = await poller.start_poll("check_export", {"export_id": "e-1", "pages": [1, 2, 3]})
        finished = await poller.wait_for_poll(poll.id, timeout=15)
        assert finished.state is PollState.SUCCEEDED
        await poller.add_job(
            "cleanup",
            IntervalTrigger(hours=6),
            arguments={"older_than_days": 30},
            job_id="cleanup",
        )

    [poll_row] = raw_text(
        engine, f"{table_prefix}polls", ["function", "arguments", "result", "callbacks"]
    )
    [job_row] = raw_text(engine, f"{table_prefix}jobs", ["function", "arguments", "trigger"])

    assert poll_row["function"] == "check_export"
    assert job_row["function"] == "cleanup"
    for row in (poll_row, job_row):
        for name, text in row.items():
            assert isinstance(text, str), f"{name} is stored as {type(text).__name__}"
    assert json.loads(poll_row["arguments"] or "") == {"export_id": "e-1", "pages": [1, 2, 3]}
    assert json.loads(poll_row["result"] or "") == {"export_id": "e-1", "pages": 3}
    assert json.loads(poll_row["callbacks"] or "") == []
    assert json.loads(job_row["arguments"] or "") == {"older_than_days": 30}
    trigger = json.loads(job_row["trigger"] or "")
    assert trigger["type"] == "interval"
    assert trigger["hours"] == 6
    # The pinned start is an ISO 8601 string, readable by any language.
    assert datetime.fromisoformat(trigger["start_date"]).tzinfo is not None


async def test_a_job_run_row_is_plain_json(
    make_poller: PollerFactory, engine: sa.Engine, table_prefix: str
) -> None:
    poller = make_poller()

    @poller.job_function()
    async def summarize(numbers: list[float]) -> dict[str, float]:
        return {"total": sum(numbers)}

    async with poller:
        await poller.add_job(
            "summarize", IntervalTrigger(hours=1), arguments={"numbers": [1.5, 2]}, job_id="s"
        )
        run = await poller.run_job_now("s")
        for _ in range(750):
            if (await poller.get_job_run(run.id)).finished_at is not None:
                break
            await asyncio.sleep(0.02)

    [row] = raw_text(engine, f"{table_prefix}job_runs", ["function", "arguments", "result"])
    assert row["function"] == "summarize"
    assert json.loads(row["arguments"] or "") == {"numbers": [1.5, 2.0]}
    assert json.loads(row["result"] or "") == {"total": 3.5}


async def test_two_pollers_starting_together_on_an_empty_database_both_start(
    make_poller: PollerFactory, engine: sa.Engine, table_prefix: str
) -> None:
    pollers = [make_poller() for _ in range(2)]
    for poller in pollers:

        @poller.job_function()
        async def work() -> None:
            return None

    assert read_columns(engine, table_prefix) == {}
    await asyncio.gather(*(poller.start() for poller in pollers))
    try:
        assert all(poller.running for poller in pollers)
        job = await pollers[0].add_job("work", IntervalTrigger(hours=1), job_id="shared")
        assert await pollers[1].get_job("shared") == job
    finally:
        await asyncio.gather(*(poller.shutdown() for poller in pollers))

    assert set(read_columns(engine, table_prefix)) == library_tables(table_prefix)


def drop(engine: sa.Engine, prefix: str) -> None:
    Tables(prefix).metadata.drop_all(engine)


async def test_many_pollers_starting_together_create_the_schema_once(
    database_url: str, engine: sa.Engine, table_prefix: str
) -> None:
    # More contenders than the pair above, on several fresh prefixes, to make a race show.
    prefixes = [f"{table_prefix}r{round_}_" for round_ in range(3)]
    try:
        for prefix in prefixes:
            pollers = [
                JobPoller(database_url=database_url, table_prefix=prefix, idle_wait_seconds=0.05)
                for _ in range(4)
            ]
            results = await asyncio.gather(
                *(poller.start() for poller in pollers), return_exceptions=True
            )
            await asyncio.gather(*(poller.shutdown() for poller in pollers))
            assert [r for r in results if isinstance(r, BaseException)] == []
            assert set(read_columns(engine, prefix)) == library_tables(prefix)
            # What they created together is a schema the next process accepts.
            async with JobPoller(database_url=database_url, table_prefix=prefix) as later:
                assert later.running
    finally:
        if not database_url.startswith("sqlite"):
            for prefix in prefixes:
                drop(engine, prefix)
