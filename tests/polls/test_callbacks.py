"""Terminal callbacks: called once with the final poll, delivered again if they raise.

Tests marked `sqlite_only` run on SQLite alone (see tests/polls/__init__.py).
"""

import asyncio
import threading

import anyio
import pytest

from fastapi_jobpoller import Done, Failed, FunctionNotFoundError, Pending, PollInfo, PollState
from tests.conftest import PollerFactory
from tests.helpers import QUIET, ended, sqlite_only

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "ending",
    [PollState.SUCCEEDED, PollState.FAILED, PollState.TIMED_OUT, PollState.CANCELLED],
)
async def test_sync_and_async_terminal_callbacks_are_called_once_with_the_final_poll(
    make_poller: PollerFactory, ending: PollState
) -> None:
    poller = make_poller()
    received: list[tuple[str, PollInfo]] = []

    @poller.poll_function()
    def ends() -> Pending | Done | Failed:
        if ending is PollState.SUCCEEDED:
            return Done(result="ok")
        if ending is PollState.FAILED:
            return Failed(reason="no")
        return Pending()

    @poller.callback()
    def sync_hook(poll: PollInfo) -> None:
        assert threading.current_thread() is not threading.main_thread()
        received.append(("sync", poll))

    @poller.callback()
    async def async_hook(poll: PollInfo) -> None:
        await asyncio.sleep(0)
        received.append(("async", poll))

    async with poller:
        poll = await poller.start_poll(
            "ends",
            interval=0.01,
            timeout=0.2 if ending is PollState.TIMED_OUT else None,
            delay=60 if ending is PollState.CANCELLED else 0,
            callbacks=("sync_hook", "async_hook"),
        )
        if ending is PollState.CANCELLED:
            await poller.cancel_poll(poll.id)
        final = await ended(poller, poll.id)
        await anyio.sleep(QUIET)
    assert final.state is ending
    assert [(kind, p.id, p.state) for kind, p in received] == [
        ("sync", poll.id, ending),
        ("async", poll.id, ending),
    ]
    for _, info in received:
        assert info.is_terminal
        assert info.finished_at is not None
        assert info.error == final.error
        assert info.result == final.result


async def test_a_callback_that_raises_is_delivered_again_later(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(callback_retry_seconds=0.1)
    received: list[PollState] = []

    @poller.poll_function()
    def finish() -> Done:
        return Done(result="r")

    @poller.callback()
    def flaky_hook(poll: PollInfo) -> None:
        received.append(poll.state)
        if len(received) == 1:
            raise ConnectionError("webhook down")

    async with poller:
        poll = await poller.start_poll("finish", interval=0.01, callbacks=("flaky_hook",))
        final = await ended(poller, poll.id)
        await anyio.sleep(QUIET)
    assert received == [PollState.SUCCEEDED, PollState.SUCCEEDED]
    assert final.state is PollState.SUCCEEDED
    assert final.result == "r"


@sqlite_only
async def test_an_unknown_callback_name_is_refused_at_submit(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.poll_function()
    def finish() -> Done:
        return Done()

    async with poller:
        with pytest.raises(FunctionNotFoundError, match="'nope'"):
            await poller.start_poll("finish", callbacks=("nope",))
        assert await poller.list_polls() == []


@sqlite_only
async def test_an_unknown_poll_function_is_refused_at_submit(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.callback()
    def hook(poll: PollInfo) -> None:
        pass

    async with poller:
        with pytest.raises(FunctionNotFoundError, match="'missing'"):
            await poller.start_poll("missing")
        # A callback is not a poll function: names have one namespace per kind.
        with pytest.raises(FunctionNotFoundError):
            await poller.start_poll("hook")
        assert await poller.list_polls() == []
