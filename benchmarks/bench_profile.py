"""Summarise a py-spy `--format raw --threads` profile: where the app process spends time.

Each raw line is `thread;outer frame;...;inner frame COUNT`. We report samples per
thread, the functions with the most samples on top of the stack ("self"), and the
functions anywhere on the stack ("inclusive"), each as a share of all samples.
"""

import re
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["parse", "summarise"]

_LINE = re.compile(r"^(.*) (\d+)$")
_LOCATION = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """`name (…/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:name`."""
    match = _LOCATION.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "src/", "benchmarks/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match['name']}"


def parse(path: Path) -> list[tuple[list[str], int]]:
    """Return (frames, samples) per distinct stack, frames outermost first."""
    stacks = []
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            stacks.append((match[1].split(";"), int(match[2])))
    return stacks


def _thread_kind(frames: list[str]) -> str:
    text = ";".join(frames)
    if "bench_workload" in text and "_work" in text:
        return "worker thread (poll function)"
    if "threads.py" in text and "_work" in text:
        return "jobpoller database thread"
    if "base_events.py" in text or "uvicorn" in text or "runners.py" in text:
        return "event loop (main thread)"
    if "notify.py" in text:
        return "LISTEN thread"
    return "other thread"


def _trace_table(trace: Path, result: dict[str, Any] | None) -> list[str]:
    """Database calls of the engine inside the window: count, time, rows."""
    import json

    calls = json.loads(trace.read_text())
    if result is not None:
        start, end = result["window"]
        window = end - start
        calls = [c for c in calls if start <= c[1] < end]
    else:
        window = max(c[1] for c in calls) - min(c[1] for c in calls)
    by_name: dict[str, list[tuple[float, int]]] = {}
    for name, _, elapsed, count in calls:
        by_name.setdefault(name, []).append((elapsed, count))
    lines = [
        "## Engine database calls in the window (wall time, on the database threads)",
        "",
        "| call | per second | mean ms | rows per call | busy share of one thread |",
        "|---|---|---|---|---|",
    ]
    for name, items in sorted(by_name.items(), key=lambda kv: -sum(e for e, _ in kv[1])):
        total = sum(e for e, _ in items)
        rows = sum(c for _, c in items) / len(items)
        lines.append(
            f"| `{name}` | {len(items) / window:,.1f} | {1000 * total / len(items):.2f} "
            f"| {rows:,.1f} | {100 * total / window:.0f} % |"
        )
    sizes = sorted(count for name, _, _, count in calls if name == "AttemptStore.claim")
    if sizes:
        buckets = [(0, 0), (1, 9), (10, 49), (50, 199), (200, 499), (500, 10**9)]
        lines += [
            "",
            "Rows per poll claim: "
            + ", ".join(
                f"{low}–{high if high < 10**9 else '∞'}: {sum(low <= n <= high for n in sizes)}"
                for low, high in buckets
            )
            + f" (median {sizes[len(sizes) // 2]}).",
        ]
    return lines + [""]


def summarise(
    path: Path, result: dict[str, Any] | None = None, top: int = 40, trace: Path | None = None
) -> str:
    """Return a markdown summary of the profile at `path`."""
    stacks = parse(path)
    total = sum(count for _, count in stacks) or 1
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        body = frames[1:] if frames and frames[0].startswith("thread") else frames
        threads[_thread_kind(body)] += count
        if body:
            own[_short(body[-1])] += count
        for name in {_short(frame) for frame in body}:
            inclusive[name] += count
    lines = [f"# Profile: {path.name}", ""]
    if result is not None:
        text = f"Run: {result['scenario']}, {result['polls']:,} polls"
        if "rate" in result:
            text += (
                f", {result['rate']:,.0f} attempts/s, lateness p99 "
                f"{result['lateness']['p99']:.3f} s"
            )
        if "submit" in result:
            submit = result["submit"]
            text += (
                f", submit {submit['rps']:,.0f} requests/s, p99 "
                f"{1000 * submit['latency']['p99']:.0f} ms"
            )
        text += (
            f"; app CPU {result['cpu_app']:.0f} %; {total:,} samples (py-spy, 200 Hz, "
            "threads holding the GIL)."
        )
        lines += [text, ""]
    if trace is not None and trace.exists():
        lines += _trace_table(trace, result)
    lines += ["## Samples per thread (holding the GIL)", "", "| thread | share |", "|---|---|"]
    lines += [f"| {name} | {100 * n / total:.1f} % |" for name, n in threads.most_common()]
    lines += ["", "## Self (top of stack)", "", "| function | share |", "|---|---|"]
    lines += [f"| `{name}` | {100 * n / total:.1f} % |" for name, n in own.most_common(top)]
    lines += ["", "## Inclusive", "", "| function | share |", "|---|---|"]
    lines += [
        f"| `{name}` | {100 * n / total:.1f} % |" for name, n in inclusive.most_common(top * 2)
    ]
    return "\n".join(lines) + "\n"
