"""Credentials are checked before a request body is read, and bodies have a size limit.

FastAPI reads and parses a body before route dependencies run: on 0.1.0 an anonymous
84 MB POST got its 401 only after the whole body was read and parsed, and `not json`
got 422 instead of 401. The bodies here are streamed and count what the app pulled.
"""

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI

from fastapi_jobpoller import JobPoller, Pending, mount_scheduler
from tests.conftest import FAST_SETTINGS
from tests.helpers import assert_error, free_port, wait_until

ADMIN_KEY = "body-gate-admin-key-000000001"
READ_KEY = "body-gate-read-key-0000000001"
LIMIT = 4096
CHUNK = b" " * 1024


class Streamed:
    """A request body sent in chunks of 1 KiB; `pulled` counts the chunks the app read."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield CHUNK


def build(tmp_path: Path, **settings: Any) -> FastAPI:
    poller = JobPoller(
        **{
            **FAST_SETTINGS,
            "database_url": f"sqlite:///{tmp_path}/jobpoller.db",
            "max_body_bytes": LIMIT,
            **settings,
        }
    )

    @poller.poll_function()
    def waits() -> Pending:
        return Pending()

    app = FastAPI()
    mount_scheduler(app, poller)
    return app


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API with both keys; no lifespan: a request that reaches a route would get 503."""
    app = build(tmp_path, api_key=ADMIN_KEY, read_api_key=READ_KEY)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post(
        "/jobpoller/polls", content=body, headers={"Content-Type": "application/json", **headers}
    )


@pytest.mark.anyio
async def test_an_anonymous_body_is_refused_before_any_of_it_is_read(
    keyed: httpx.AsyncClient,
) -> None:
    body = Streamed(50 * 1024)  # 50 MiB if it were read
    response = await post(keyed, body)
    assert_error(response, 401, "not_authenticated")
    assert body.pulled == 0


@pytest.mark.anyio
async def test_a_body_that_is_not_json_gets_401_not_422_without_a_key(
    keyed: httpx.AsyncClient,
) -> None:
    assert_error(await post(keyed, b"not json"), 401, "not_authenticated")
    assert_error(
        await post(keyed, b"not json", **{"X-API-Key": "wrong" * 5}), 401, "not_authenticated"
    )


@pytest.mark.anyio
async def test_the_read_key_is_refused_on_a_write_before_the_body_is_read(
    keyed: httpx.AsyncClient,
) -> None:
    body = Streamed(100)
    assert_error(await post(keyed, body, **{"X-API-Key": READ_KEY}), 403, "forbidden")
    assert body.pulled == 0


@pytest.mark.anyio
async def test_a_declared_length_over_the_limit_is_refused_unread(
    keyed: httpx.AsyncClient,
) -> None:
    body = Streamed(LIMIT // len(CHUNK) + 1)
    response = await keyed.post(
        "/jobpoller/polls",
        content=body,
        headers={
            "X-API-Key": ADMIN_KEY,
            "Content-Type": "application/json",
            "Content-Length": str(LIMIT + len(CHUNK)),
        },
    )
    error = assert_error(response, 413, "body_too_large")
    assert "4,096 bytes" in error["detail"]
    assert body.pulled == 0


@pytest.mark.anyio
async def test_a_chunked_body_stops_being_read_once_it_passes_the_limit(
    keyed: httpx.AsyncClient,
) -> None:
    body = Streamed(50 * 1024)  # no Content-Length: sent chunked
    response = await post(keyed, body, **{"X-API-Key": ADMIN_KEY})
    assert_error(response, 413, "body_too_large")
    assert body.pulled == LIMIT // len(CHUNK) + 1


@pytest.mark.anyio
async def test_a_body_within_the_limit_reaches_the_route(keyed: httpx.AsyncClient) -> None:
    # The route itself answers: the poller is not started in this fixture.
    response = await post(keyed, b'{"function": "waits"}', **{"X-API-Key": ADMIN_KEY})
    assert_error(response, 503, "not_running")


@pytest.mark.anyio
async def test_the_limit_also_holds_when_the_host_guards_the_routes(tmp_path: Path) -> None:
    def signed_in() -> None:
        """The host's own check (accepting everyone here)."""

    app = FastAPI()
    poller = JobPoller(
        **{**FAST_SETTINGS, "database_url": f"sqlite:///{tmp_path}/j.db", "max_body_bytes": LIMIT}
    )
    mount_scheduler(app, poller, dependencies=[Depends(signed_in)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        body = Streamed(50 * 1024)
        assert_error(await post(client, body), 413, "body_too_large")
    assert body.pulled == LIMIT // len(CHUNK) + 1


def test_the_limit_is_a_setting_with_a_floor(tmp_path: Path) -> None:
    assert JobPoller(database_url="sqlite://").settings.max_body_bytes == 1_048_576
    with pytest.raises(ValueError, match="max_body_bytes"):
        JobPoller(database_url="sqlite://", max_body_bytes=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    """The API under a real uvicorn server (in a thread); yields its port."""
    app = build(tmp_path, api_key=ADMIN_KEY)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn started")
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def first_line_of_answer(port: int, headers: str, sent: bytes) -> str:
    """Send a request head and part of a huge body; return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            (
                "POST /jobpoller/polls HTTP/1.1\r\nHost: app\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {50 * 2**20}\r\n{headers}\r\n"
            ).encode()
            + sent
        )
        answer = connection.recv(4096).decode(errors="replace")
    return answer.split("\r\n", 1)[0]


def test_a_real_server_answers_before_the_rest_of_a_50_mib_body_arrives(served: int) -> None:
    # Only 8 KiB of the announced 50 MiB are ever sent: the answers come without the rest.
    assert first_line_of_answer(served, "", CHUNK * 8) == "HTTP/1.1 401 Unauthorized"
    key = f"X-API-Key: {ADMIN_KEY}\r\n"
    assert first_line_of_answer(served, key, CHUNK * 8).startswith("HTTP/1.1 413")
