"""Arguments come back from storage as they were given, or are refused when submitted.

On 0.1.0 a datetime inside a `dict` argument silently became a string, sets and
Decimals were converted, NaN inside a `dict`/`Any` argument was stored as null, and
`true` was accepted as the number 1.
"""

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest

from fastapi_jobpoller import InvalidArgumentsError, JobPoller, Pending
from tests.helpers import eventually, sqlite_only

pytestmark = [pytest.mark.anyio, sqlite_only]

WHEN = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
received: list[dict[str, Any]] = []


class Size(Enum):
    SMALL = "small"


def watch(
    count: int = 1,
    ratio: float = 1.0,
    payload: dict[str, Any] | None = None,
    anything: Any = None,
    when: datetime | None = None,
    day: date | None = None,
    size: Size = Size.SMALL,
    pair: tuple[int, int] = (0, 0),
) -> Pending:
    received.append(
        {"payload": payload, "anything": anything, "when": when, "day": day, "pair": pair}
    )
    return Pending()


@pytest.fixture
async def started(poller: JobPoller) -> JobPoller:
    poller.poll_function()(watch)
    return poller


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"payload": {"at": WHEN}}, "would come back as {'at': '2026-12-04T09:30:00Z'}"),
        ({"anything": {1, 2}}, "would come back as [1, 2]"),
        ({"payload": {"price": Decimal("1.50")}}, "would come back as {'price': '1.50'}"),
        ({"payload": {"x": float("nan")}}, "would come back as {'x': None}"),
        ({"anything": [float("inf")]}, "would come back as [None]"),
        ({"anything": {1: "one"}}, "would come back as {'1': 'one'}"),
        ({"count": True}, "a boolean is not a number"),
        ({"ratio": False}, "a boolean is not a number"),
    ],
    ids=[
        "datetime-in-dict",
        "set",
        "decimal",
        "nan-in-dict",
        "inf-in-any",
        "int-key",
        "true",
        "false",
    ],
)
async def test_what_would_not_round_trip_is_refused_at_submit(
    started: JobPoller, arguments: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidArgumentsError, match=re.escape(reason)):
        await started.start_poll("watch", arguments)
    assert await started.list_polls() == []


async def test_typed_parameters_convert_and_plain_json_is_kept(started: JobPoller) -> None:
    arguments = {
        "payload": {"nested": [1, "a", None, {"b": 2.5, "ok": True}]},
        "anything": ["x", 1],
        "when": WHEN,
        "day": date(2026, 12, 4),
        "size": Size.SMALL,
        "pair": (1, 2),
        "count": 3,
        "ratio": 2,
    }
    poll = await started.start_poll("watch", arguments, interval=0.05)
    assert poll.arguments["when"] == "2026-12-04T09:30:00Z"
    received.clear()
    await eventually(lambda: bool(received), "an attempt")
    seen = received[-1]
    assert seen["payload"] == {"nested": [1, "a", None, {"b": 2.5, "ok": True}]}
    assert (seen["when"], seen["day"], seen["pair"]) == (WHEN, date(2026, 12, 4), (1, 2))
