"""Our library's targets on PostgreSQL, judged on the median of each scenario's runs."""

import statistics
from collections.abc import Callable
from typing import Any

from bench_stats import median_of, pair_ratios

__all__ = ["targets"]

Result = dict[str, Any]
Row = tuple[str, str, bool | None]


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} s"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _paced_p99(result: Result) -> float | None:
    # The steady-rate phase: latency while the app is not saturated by the clients.
    paced = result.get("submit_paced")
    return None if paced is None else float(paced["latency"]["p99"])


def _closed_p99(result: Result) -> float | None:
    return float(result["submit"]["latency"]["p99"]) if "submit" in result else None


# (scenario, label, figure, limit, at least?, format)
_LIMITS: list[tuple[str, str, Callable[[Result], float | None], float, bool, Any]] = [
    ("polls-5000", "N=5,000: ≥ 4,500 attempts/s", lambda r: r["rate"], 4500, True, _rate),
    (
        "polls-5000",
        "N=5,000: lateness p99 ≤ 500 ms",
        lambda r: r["lateness"]["p99"],
        0.5,
        False,
        _ms,
    ),
    (
        "polls-5000",
        "N=5,000: between attempts p99 ≤ 1.5 s",
        lambda r: r["between"]["p99"],
        1.5,
        False,
        _s,
    ),
    (
        "submit-5000",
        "N=5,000: submit API p99 ≤ 100 ms (steady 100 requests/s)",
        _paced_p99,
        0.1,
        False,
        _ms,
    ),
    (
        "submit-5000",
        "N=5,000: submit API p99 ≤ 100 ms (closed loop, 10 clients: saturated)",
        _closed_p99,
        0.1,
        False,
        _ms,
    ),
    (
        "polls-1000",
        "N=1,000: lateness p99 ≤ 50 ms",
        lambda r: r["lateness"]["p99"],
        0.05,
        False,
        _ms,
    ),
    (
        "polls-1000",
        "N=1,000: between attempts p99 ≤ 1.1 s",
        lambda r: r["between"]["p99"],
        1.1,
        False,
        _s,
    ),
    (
        "polls-10000",
        "N=10,000: ≥ 8,000 attempts/s (one process)",
        lambda r: r["rate"],
        8000,
        True,
        _rate,
    ),
]


def targets(results: list[Result]) -> list[Row]:
    """Return (target, measured, met): each figure is the median over the runs."""
    out: list[Row] = []
    for scenario, label, value, limit, at_least, fmt in _LIMITS:
        measured = median_of(results, scenario, "jobpoller", value)
        if measured is None:
            out.append((label, "not run", None))
            continue
        met = measured >= limit if at_least else measured <= limit
        out.append((label, fmt(measured), met))
    out.insert(1, _baseline_ratio(results))
    out.append(_two_processes(results))
    return out


def _baseline_ratio(results: list[Result]) -> Row:
    label = "N=5,000: ≥ 5× the baseline rate (median of the pairs)"
    ratios = pair_ratios(results, "polls-5000", lambda r: r["rate"])
    if not ratios:
        return (label, "not run", None)
    middle = statistics.median(ratios)
    shown = f"{middle:.1f}× ({min(ratios):.1f}–{max(ratios):.1f}×)"
    return (label, shown, middle >= 5.0)


def _two_processes(results: list[Result]) -> Row:
    label = "N=10,000: two processes ≥ 1.6× one (unless one keeps up)"
    one = median_of(results, "polls-10000", "jobpoller", lambda r: r["rate"])
    two = median_of(results, "two-processes-10000", "jobpoller", lambda r: r["rate"])
    if one is None or two is None:
        return (label, "not run", None)
    keeps_up = one >= 0.95 * 10_000
    factor = two / one if one else 0.0
    note = f"{factor:.2f}× ({_rate(two)}/s vs {_rate(one)}/s)"
    if keeps_up:
        note += "; one process already keeps up"
    return (label, note, keeps_up or factor >= 1.6)
