"""Repeated runs: medians per design, ratios per interleaved pair, and their spread.

Each scenario runs the designs interleaved (baseline 1, ours 1, baseline 2, ours 2, ...).
Run k of ours is compared with run k of the baseline, measured a minute apart on the same
machine; the report gives the median of those pair ratios and their range, so one slow
minute for either design cannot make the headline.
"""

import statistics
from collections.abc import Callable
from typing import Any

__all__ = ["BUSY_REST_PERCENT", "flags", "median_of", "pair_ratios", "ratio_text", "runs"]

# Other processes' CPU in a window (in % of one core) above which the window is marked.
BUSY_REST_PERCENT = 25.0

Result = dict[str, Any]
Value = Callable[[Result], float | None]


def runs(results: list[Result], scenario: str, design: str) -> list[Result]:
    """Every run of one design in one scenario, in the order they ran."""
    found = [r for r in results if r["scenario"] == scenario and r["design"] == design]
    return sorted(found, key=lambda r: int(r.get("repeat", 1)))


def median_of(results: list[Result], scenario: str, design: str, value: Value) -> float | None:
    """The median of one figure over a design's runs (None when no run has it)."""
    values = [
        v for v in (_safe(value, r) for r in runs(results, scenario, design)) if v is not None
    ]
    return float(statistics.median(values)) if values else None


def pair_ratios(results: list[Result], scenario: str, value: Value) -> list[float]:
    """Ours / baseline for each repeat that both designs completed."""
    theirs = {int(r.get("repeat", 1)): r for r in runs(results, scenario, "apscheduler")}
    ratios = []
    for ours in runs(results, scenario, "jobpoller"):
        base = theirs.get(int(ours.get("repeat", 1)))
        if base is None:
            continue
        mine, other = _safe(value, ours), _safe(value, base)
        if mine is not None and other:
            ratios.append(mine / other)
    return ratios


def ratio_text(ratios: list[float], *, bold: bool = False) -> str:
    """`5.1× (4.9–5.3×, 3 pairs)`: the median, then the range when there is one."""
    if not ratios:
        return "–"
    middle = _times(statistics.median(ratios))
    shown = f"**{middle}**" if bold else middle
    if len(ratios) == 1:
        return f"{shown} (1 pair)"
    low, high = _times(min(ratios)), _times(max(ratios))
    return f"{shown} ({low}–{high}, {len(ratios)} pairs)"


def flags(result: Result) -> list[str]:
    """Why a run's window is not clean: errors logged, deadlocks, a host slow at its start,
    other processes busy during it.

    The speed check after the window is reported, not judged: on a shared two-core host
    it comes out slower after every loaded window, for both designs alike.
    """
    found = []
    if result.get("log_errors"):
        found.append(f"{result['log_errors']} error lines logged")
    if result.get("pg_deadlocks"):
        found.append(f"{result['pg_deadlocks']} deadlocks")
    if result.get("speed_gate") == "slow":
        found.append("host slow before the window")
    if result.get("cpu_rest", 0) > BUSY_REST_PERCENT:
        found.append(f"other processes used {result['cpu_rest']:.0f} % CPU in the window")
    return found


def _times(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def _safe(value: Value, result: Result) -> float | None:
    try:
        figure = value(result)
    except (KeyError, TypeError):
        return None
    return None if figure is None else float(figure)
