"""Figures from recorded attempts: rate, time between attempts, lateness, staleness.

Definitions (the same for both designs, computed only from the attempt times the poll
function itself recorded):
- rate: attempts that started inside the window, per second; due: polls / interval.
- between attempts: start of an attempt minus the start of the previous attempt of the
  same poll, for attempts inside the window.
- lateness: start minus due time, where the due time is the previous attempt's start
  plus the interval (or the seeded first due time for a poll's first attempt). For
  fastapi-jobpoller, which schedules the next attempt from the *end* of the previous
  one, this is an upper bound of its lateness; for APScheduler, which schedules on a
  fixed grid and runs a coalesced late tick with the next one due a grid step later,
  it is a lower bound. Both errors favour the baseline.
- staleness at the end: window end minus each poll's last attempt before it (seeded
  first due if it has none): how old the freshest look at each poll is.
- duplicates: attempts less than half an interval after the previous one of the
  same poll (two processes running the same tick).
"""

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["load_attempts", "poll_figures", "submit_figures"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def load_attempts(paths: list[Path]) -> tuple[Ints, Floats]:
    """Read and concatenate attempt files written by `bench_workload.dump`."""
    all_ids: list[Ints] = []
    all_times: list[Floats] = []
    for path in paths:
        data = path.read_bytes()
        count = int.from_bytes(data[:8], "little")
        ids = np.frombuffer(data, dtype=np.int64, count=count, offset=8)
        times = np.frombuffer(data, dtype=np.float64, count=count, offset=8 + 8 * count)
        all_ids.append(ids)
        all_times.append(times)
    if not all_ids:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(all_ids), np.concatenate(all_times)


def _spread(values: Floats) -> dict[str, float | None]:
    if values.size == 0:
        return {"p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(values.max())}


def poll_figures(
    ids: Ints,
    times: Floats,
    *,
    start: float,
    end: float,
    interval: float,
    count: int,
    first_due: float,
) -> dict[str, Any]:
    """Return the poll figures of the window [start, end) for polls 0..count-1."""
    keep = (ids >= 0) & (ids < count)  # submitted polls (id -1) are not part of this
    ids, times = ids[keep], times[keep]
    order = np.lexsort((times, ids))
    ids, times = ids[order], times[order]
    in_window = (times >= start) & (times < end)
    attempts = int(in_window.sum())
    same = np.zeros(ids.size, dtype=bool)
    same[1:] = ids[1:] == ids[:-1]
    previous = np.empty(ids.size)
    previous[1:] = times[:-1]
    seeded = first_due + interval * ids / count
    # Lateness: against the previous start + interval, or the seeded due time.
    due = np.where(same, previous + interval, seeded)
    lateness = (times - due)[in_window]
    gaps = (times - previous)[in_window & same]
    duplicates = int((gaps < interval / 2).sum())
    # Staleness at the end of the window, per poll.
    last = np.full(count, np.nan)
    before_end = times < end
    end_ids, end_times = ids[before_end], times[before_end]
    final = np.ones(end_ids.size, dtype=bool)
    final[:-1] = end_ids[:-1] != end_ids[1:]  # the last attempt of each poll
    last[end_ids[final]] = end_times[final]
    never = np.isnan(last)
    last[never] = first_due + interval * np.arange(count)[never] / count
    stale = end - last
    attempted = np.zeros(count, dtype=bool)
    attempted[ids[in_window]] = True
    duration = end - start
    return {
        "attempts": attempts,
        "rate": attempts / duration,
        "due_rate": count / interval,
        "between": _spread(gaps),
        "lateness": _spread(lateness),
        "stale_end": _spread(stale),
        "unattempted": int(count - attempted.sum()),
        "duplicates": duplicates,
        "first_attempt": float(times.min()) if times.size else None,
    }


def submit_figures(load: dict[str, Any]) -> dict[str, Any]:
    """Return requests/s and latency percentiles of one load generator run."""
    latencies = np.asarray(load["latencies"], dtype=np.float64)
    spread = _spread(latencies)
    return {
        "requests": int(latencies.size),
        "errors": int(load["error_count"]),
        "unsent": int(load.get("unsent", 0)),
        "elapsed": float(load["elapsed"]),
        # Answered requests only: a paced run's unsent ones are in `latencies` as waits.
        "rps": (latencies.size - int(load.get("unsent", 0))) / float(load["elapsed"])
        if load["elapsed"]
        else 0.0,
        "latency": spread,
    }
