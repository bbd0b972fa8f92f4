"""The trivial poll function both designs run, and its cheap attempt recorder.

Every call appends (poll index, wall-clock time) to arrays owned by the calling thread:
two appends, no lock, no allocation per call beyond the float. The arrays are written
to a file after the run and analysed by `bench_analysis`, so the figures never depend
on either design's own bookkeeping.
"""

import array
import threading
import time
from pathlib import Path

from fastapi_jobpoller import Pending

__all__ = ["aps_job", "dump", "jobpoller_poll", "jobpoller_poll_async", "record"]

_local = threading.local()
_lock = threading.Lock()
_recorders: "list[tuple[array.array[int], array.array[float]]]" = []
_PENDING = Pending()


def record(index: int) -> None:
    """Note that poll `index` was attempted now."""
    try:
        ids, times = _local.arrays
    except AttributeError:
        ids, times = array.array("q"), array.array("d")
        _local.arrays = (ids, times)
        with _lock:
            _recorders.append((ids, times))
    ids.append(index)
    times.append(time.time())


def jobpoller_poll(i: int) -> Pending:
    """Our library's poll function: record the attempt, never finish."""
    record(i)
    return _PENDING


async def jobpoller_poll_async(i: int) -> Pending:
    """The same as an `async def` (runs on the event loop, no thread hop)."""
    record(i)
    return _PENDING


def aps_job(i: int) -> None:
    """The baseline's interval job: record the attempt."""
    record(i)


def dump(path: Path) -> int:
    """Write every recorded attempt to `path` (int64 ids, then float64 times)."""
    with _lock:
        recorders = list(_recorders)
    ids: array.array[int] = array.array("q")
    times: array.array[float] = array.array("d")
    for thread_ids, thread_times in recorders:
        count = min(len(thread_ids), len(thread_times))
        ids.extend(thread_ids[:count])
        times.extend(thread_times[:count])
    with path.open("wb") as file:
        file.write(len(ids).to_bytes(8, "little"))
        ids.tofile(file)
        times.tofile(file)
    return len(ids)
