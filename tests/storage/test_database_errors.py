"""Database errors say what went wrong, and those no retry can fix stop the start.

On 0.1.0 a wrong database name, an unknown user, a refused port and a missing SQLite
folder all logged the same line (`the database is unavailable (OperationalError)`), and
the app served degraded forever.
"""

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import ConfigurationError, JobPoller
from tests.conftest import FAST_SETTINGS, MYSQL_URL_ENV, POSTGRESQL_URL_ENV, server_url
from tests.helpers import free_port

SECRET = "hunter2-not-in-any-log"

pytestmark = pytest.mark.anyio


async def start_refused(url: str) -> ConfigurationError:
    poller = JobPoller(**{**FAST_SETTINGS, "database_url": url})
    with pytest.raises(ConfigurationError) as caught:
        async with poller:
            pass
    assert not poller.running
    return caught.value


def other(url: str, **parts: Any) -> str:
    return sa.make_url(url).set(**parts).render_as_string(hide_password=False)


async def test_a_missing_sqlite_folder_stops_the_start_and_names_the_folder(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "no-such-folder"
    error = await start_refused(f"sqlite:///{folder}/jobpoller.db")
    assert str(folder) in str(error)
    assert "folder" in str(error)


@pytest.mark.postgresql
async def test_an_unknown_postgresql_database_stops_the_start_with_the_server_reason() -> None:
    name = f"jp_missing_{uuid.uuid4().hex[:8]}"
    error = await start_refused(other(server_url(POSTGRESQL_URL_ENV), database=name))
    assert f'database "{name}" does not exist' in str(error)


@pytest.mark.postgresql
async def test_an_unknown_postgresql_user_stops_the_start() -> None:
    url = other(server_url(POSTGRESQL_URL_ENV), username="jp_nobody", password=SECRET)
    error = await start_refused(url)
    assert 'role "jp_nobody" does not exist' in str(error)
    assert SECRET not in str(error)


@pytest.mark.mysql
async def test_an_unknown_mariadb_database_stops_the_start() -> None:
    name = f"jp_missing_{uuid.uuid4().hex[:8]}"
    error = await start_refused(other(server_url(MYSQL_URL_ENV), database=name))
    assert "Unknown database" in str(error) and name in str(error)


@pytest.mark.mysql
async def test_a_refused_mariadb_password_stops_the_start_without_showing_it() -> None:
    url = other(server_url(MYSQL_URL_ENV), username="jp_nobody", password=SECRET)
    error = await start_refused(url)
    assert "Access denied" in str(error)
    assert SECRET not in str(error)


@pytest.mark.postgresql
async def test_a_server_that_is_down_is_ridden_out_and_its_reason_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on the port: a server that is down or restarting. The start goes
    # on, degraded, and the log says why, without the password.
    url = other(server_url(POSTGRESQL_URL_ENV), port=free_port(), password=SECRET)
    poller = JobPoller(**{**FAST_SETTINGS, "database_url": url})
    with caplog.at_level(logging.ERROR, logger="fastapi_jobpoller"):
        async with poller:
            health = await poller.health()
    assert health.status == "unavailable"
    logged = [r.getMessage() for r in caplog.records if "unreachable at start" in r.getMessage()]
    assert len(logged) == 1
    assert "Connection refused" in logged[0]
    assert SECRET not in caplog.text
