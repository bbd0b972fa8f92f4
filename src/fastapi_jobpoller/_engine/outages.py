"""Database writes that must land: retried while the database is unreachable."""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar

from ..exceptions import DatabaseUnavailableError
from .threads import run_in

__all__ = ["write_through_outages"]

P = ParamSpec("P")
T = TypeVar("T")

# Pauses between tries of an outcome write while the database is unreachable: short, so
# the outcome lands soon after it is back, well before the lease runs out.
_FIRST_WRITE_RETRY_SECONDS = 0.1
_LONGEST_WRITE_RETRY_SECONDS = 1.0


async def write_through_outages(
    pool: Executor, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run a database write on `pool`, again and again while the database is unreachable.

    The work that made the write stays in flight meanwhile, so its lease is renewed once
    the database is back and what it did is stored, instead of being run again by
    whichever process claims the row after its lease expired.
    """
    pause = _FIRST_WRITE_RETRY_SECONDS
    while True:
        try:
            return await run_in(pool, function, *args, **kwargs)
        except DatabaseUnavailableError:
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_WRITE_RETRY_SECONDS)
