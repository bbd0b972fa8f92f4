import pytest

from fastapi_jobpoller import Done, Pending, PollState
from tests.conftest import PollerFactory

pytestmark = pytest.mark.anyio


async def test_a_poll_runs_until_its_function_reports_done(make_poller: PollerFactory) -> None:
    poller = make_poller()
    calls: list[int] = []

    @poller.poll_function()
    async def three_steps(job: str) -> Pending | Done:
        calls.append(1)
        return Done(job) if len(calls) >= 3 else Pending(progress=len(calls))

    async with poller:
        poll = await poller.start_poll("three_steps", {"job": "x"}, interval=0.01)
        final = await poller.wait_for_poll(poll.id, timeout=10)
    assert final.state is PollState.SUCCEEDED
    assert final.attempts == 3
    assert final.result == "x"
