"""The results table (markdown) and the plot (PNG) of one benchmark run."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["targets", "write_plot", "write_report"]

Result = dict[str, Any]
_NAMES = {"apscheduler": "APScheduler baseline", "jobpoller": "fastapi-jobpoller"}


def _find(results: list[Result], scenario: str, design: str) -> Result | None:
    for result in results:
        if result["scenario"] == scenario and result["design"] == design:
            return result
    return None


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 10:
        return f"{value:.1f} s"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} s"


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "–"
    ratio = ours / theirs
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def _spread(figures: dict[str, float | None], fmt: Callable[[float | None], str]) -> str:
    return " / ".join(fmt(figures[key]) for key in ("p50", "p99", "max"))


def _per_attempt(result: Result) -> str:
    if not result.get("rate"):
        return "–"
    return f"{result['cpu_app'] * 1e4 / result['rate']:,.0f} µs"


def _poll_rows(results: list[Result], scenarios: list[str]) -> list[str]:
    header = (
        "| N | design | attempts/s (of due) | between attempts p50 / p99 / max "
        "| lateness p50 / p99 / max | stalest poll at end | never attempted "
        "| app CPU (µs per attempt) | PostgreSQL CPU (our backends) | RSS peak "
        "| load avg (1 min) |"
    )
    rows = [header, "|" + "---|" * 11]
    for scenario in scenarios:
        pair = [_find(results, scenario, design) for design in ("apscheduler", "jobpoller")]
        for result in pair:
            if result is None or "rate" not in result:
                continue
            pg = result["cpu_pg_backends"]
            rows.append(
                f"| {result['polls']:,} | {_NAMES[result['design']]} "
                f"| {_num(result['rate'])} ({100 * result['rate'] / result['due_rate']:.0f} %) "
                f"| {_spread(result['between'], _s)} | {_spread(result['lateness'], _ms)} "
                f"| {_ms(result['stale_end']['max'])} | {result['unattempted']:,} "
                f"| {result['cpu_app']:.0f} % ({_per_attempt(result)}) "
                f"| {'–' if pg is None else f'{pg:.0f} %'} "
                f"| {result['rss_peak_mib']:.0f} MiB | {result['loadavg_before'][0]:.2f} |"
            )
        theirs, ours = pair
        if theirs is not None and ours is not None and "rate" in ours:
            rows.append(
                f"| {ours['polls']:,} | **ratio ours / baseline** "
                f"| **{_ratio(ours['rate'], theirs['rate'])}** "
                f"| p99 {_ratio(ours['between']['p99'], theirs['between']['p99'])} "
                f"| p99 {_ratio(ours['lateness']['p99'], theirs['lateness']['p99'])} "
                f"| | | {_ratio(ours['cpu_app'], theirs['cpu_app'])} "
                f"| {_ratio(ours['cpu_pg_backends'], theirs['cpu_pg_backends'])} "
                f"| {_ratio(ours['rss_peak_mib'], theirs['rss_peak_mib'])} | |"
            )
    return rows


def targets(results: list[Result]) -> list[tuple[str, str, bool | None]]:
    """Return (target, measured, met) for our library's targets on PostgreSQL."""
    out: list[tuple[str, str, bool | None]] = []

    def check(
        scenario: str,
        label: str,
        value: Callable[[Result], float | None],
        limit: float,
        at_least: bool,
        fmt: Callable[[float | None], str],
    ) -> None:
        result = _find(results, scenario, "jobpoller")
        measured = None if result is None else value(result)
        if measured is None:
            out.append((label, "not run", None))
            return
        met = measured >= limit if at_least else measured <= limit
        out.append((label, fmt(measured), met))

    def ratio_to_baseline(result: Result) -> float | None:
        theirs = _find(results, "polls-5000", "apscheduler")
        if theirs is None or not theirs["rate"]:
            return None
        return float(result["rate"] / theirs["rate"])

    def submit_p99(result: Result) -> float | None:
        # The steady-rate phase: latency while the app is not saturated by the clients.
        paced = result.get("submit_paced")
        return None if paced is None else float(paced["latency"]["p99"])

    rate = _num
    check("polls-5000", "N=5,000: ≥ 4,500 attempts/s", lambda r: r["rate"], 4500, True, rate)
    check(
        "polls-5000",
        "N=5,000: ≥ 5× the baseline rate",
        ratio_to_baseline,
        5.0,
        True,
        lambda v: "–" if v is None else f"{v:.1f}×",
    )
    check(
        "polls-5000",
        "N=5,000: lateness p99 ≤ 500 ms",
        lambda r: r["lateness"]["p99"],
        0.5,
        False,
        _ms,
    )
    check(
        "polls-5000",
        "N=5,000: between attempts p99 ≤ 1.5 s",
        lambda r: r["between"]["p99"],
        1.5,
        False,
        _s,
    )
    check(
        "submit-5000",
        "N=5,000: submit API p99 ≤ 100 ms (steady 100 requests/s)",
        submit_p99,
        0.1,
        False,
        _ms,
    )
    check(
        "submit-5000",
        "N=5,000: submit API p99 ≤ 100 ms (closed loop, 10 clients: saturated)",
        lambda r: float(r["submit"]["latency"]["p99"]) if "submit" in r else None,
        0.1,
        False,
        _ms,
    )
    check(
        "polls-1000",
        "N=1,000: lateness p99 ≤ 50 ms",
        lambda r: r["lateness"]["p99"],
        0.05,
        False,
        _ms,
    )
    check(
        "polls-1000",
        "N=1,000: between attempts p99 ≤ 1.1 s",
        lambda r: r["between"]["p99"],
        1.1,
        False,
        _s,
    )
    check(
        "polls-10000",
        "N=10,000: ≥ 8,000 attempts/s (one process)",
        lambda r: r["rate"],
        8000,
        True,
        rate,
    )
    one = _find(results, "polls-10000", "jobpoller")
    two = _find(results, "two-processes-10000", "jobpoller")
    if one is None or two is None:
        out.append(("N=10,000: two processes ≥ 1.6× one (unless one keeps up)", "not run", None))
    else:
        keeps_up = one["rate"] >= 0.95 * one["due_rate"]
        factor = two["rate"] / one["rate"] if one["rate"] else 0.0
        met = keeps_up or factor >= 1.6
        note = f"{factor:.2f}× ({_num(two['rate'])}/s vs {_num(one['rate'])}/s)"
        if keeps_up:
            note += "; one process already keeps up"
        out.append(("N=10,000: two processes ≥ 1.6× one (unless one keeps up)", note, met))
    return out


def write_report(results: list[Result], meta: dict[str, Any], path: Path, plot: Path) -> None:
    """Write the markdown results file."""
    lines = [
        "# Benchmark results: fastapi-jobpoller vs the hand-written APScheduler design",
        "",
        f"Command: `{meta['command']}`, {meta['started']} – {meta['finished']} (UTC); "
        f"{meta['cpus']} CPUs; Python {meta['python']}; measurement window "
        f"{meta['duration']:g} s after a {meta['warmup']:g} s warm-up.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "PostgreSQL settings: "
        + ", ".join(f"{k} {v}" for k, v in meta.get("postgresql_settings", {}).items())
        + " (the system catalogs are vacuumed before the run).",
        "",
        "Definitions: see `benchmarks/bench_analysis.py` and docs/benchmarks.md. Lateness is "
        "measured against the previous attempt's start + 1 s (an upper bound for ours, a "
        "lower bound for the baseline). CPU in % of one core. Load average is the 1-minute "
        "figure just before the run; other processes' CPU is listed per run at the end, "
        "with a CPU speed check (a fixed pure-Python loop, best of 5; larger = slower "
        "host).",
        "",
    ]
    poll_scenarios = [
        s
        for s in (
            "polls-1000",
            "polls-2000",
            "polls-5000",
            "polls-10000",
            "polls-20000",
            "async-5000",
            "async-10000",
        )
        if any(r["scenario"] == s for r in results)
    ]
    if poll_scenarios:
        lines += ["## Active 1-second polls, PostgreSQL, one process", ""]
        lines += _poll_rows(results, poll_scenarios) + [""]
        if any(s.startswith("async") for s in poll_scenarios):
            lines += [
                "(async-N: our library with an `async def` poll function; the other "
                "rows use the same `def` function in both designs.)",
                "",
            ]
    if any(r["scenario"].startswith("submit") for r in results):
        lines += [
            "## Submit API (`POST /submit`, 10 keep-alive clients in a separate process)",
            "",
            "Two phases per run, 15 s each: a closed loop (each client sends its next request "
            "when the last is answered: the most requests per second; its latency is mostly "
            "the clients' own queue), then a steady 100 requests/s whose latency counts from "
            "when each request was due (no coordinated omission).",
            "",
            "| while | design | closed loop: requests/s | closed loop: latency p50 / p99 / max "
            "| 100 req/s: latency p50 / p99 / max | errors | app CPU "
            "| PostgreSQL CPU (all processes) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for scenario, label in (
            ("submit-idle", "idle"),
            ("submit-5000", "5,000 polls active"),
            ("submit-5000-pool15", "5,000 polls active, `database_pool_size=15`"),
        ):
            pair = [_find(results, scenario, d) for d in ("apscheduler", "jobpoller")]
            for result in pair:
                if result is None:
                    continue
                submit = result["submit"]
                paced = result.get("submit_paced")
                rps = submit["rps"]
                errors = str(submit["errors"] + (0 if paced is None else paced["errors"]))
                if paced is not None and paced.get("unsent"):
                    errors += f" ({paced['unsent']:,} not sent in time)"
                lines.append(
                    f"| {label} | {_NAMES[result['design']]} | {_num(rps, 0 if rps >= 10 else 1)} "
                    f"| {_spread(submit['latency'], _ms)} "
                    f"| {'–' if paced is None else _spread(paced['latency'], _ms)} | {errors} "
                    f"| {result['cpu_app']:.0f} % | {result['cpu_pg_all']:.0f} % |"
                )
            theirs, ours = pair
            if theirs is not None and ours is not None:
                mine, base = ours["submit"], theirs["submit"]
                paced_ratio = ""
                if "submit_paced" in ours and "submit_paced" in theirs:
                    paced_ratio = "p99 " + _ratio(
                        ours["submit_paced"]["latency"]["p99"],
                        theirs["submit_paced"]["latency"]["p99"],
                    )
                lines.append(
                    f"| {label} | **ratio ours / baseline** "
                    f"| **{_ratio(mine['rps'], base['rps'])}** "
                    f"| p99 {_ratio(mine['latency']['p99'], base['latency']['p99'])} "
                    f"| {paced_ratio} | | | |"
                )
        lines.append("")
        loaded = [_find(results, "submit-5000", d) for d in ("apscheduler", "jobpoller")]
        loaded.append(_find(results, "submit-5000-pool15", "jobpoller"))
        if any(r is not None and "rate" in r for r in loaded):
            lines.append(
                "Polls during the loaded submit run: "
                + "; ".join(
                    f"{_NAMES[r['design']]}"
                    f"{' (pool 15)' if r['scenario'].endswith('pool15') else ''} "
                    f"{_num(r['rate'])} attempts/s, lateness p99 {_ms(r['lateness']['p99'])}"
                    for r in loaded
                    if r is not None and "rate" in r
                )
                + "."
            )
            lines.append("")
    memory = [r for r in results if r["scenario"] in ("polls-10000", "startup-100000")]
    if memory:
        lines += [
            "## Memory and start-up",
            "",
            "| stored polls | design | RSS peak | RSS at end | first attempt after process start "
            "| after app ready | attempts/s in the window |",
            "|---|---|---|---|---|---|---|",
        ]
        for scenario in ("polls-10000", "startup-100000"):
            for design in ("apscheduler", "jobpoller"):
                result = _find(results, scenario, design)
                if result is None:
                    continue
                lines.append(
                    f"| {result['polls']:,} | {_NAMES[design]} | {result['rss_peak_mib']:.0f} MiB "
                    f"| {result['rss_end_mib']:.0f} MiB "
                    f"| {_ms(result.get('first_attempt_seconds'))} "
                    f"| {_ms(result.get('first_attempt_after_ready'))} "
                    f"| {_num(result.get('rate'))} |"
                )
        lines += [
            "",
            "10,000: the N=10,000 run above (all due every second). 100,000: polls all "
            "overdue when the process starts (a restart after downtime); RSS sampled over "
            "the window from process start.",
            "",
        ]
    two = [_find(results, "two-processes-10000", d) for d in ("apscheduler", "jobpoller")]
    if any(r is not None for r in two):
        lines += [
            "## Two processes, one PostgreSQL, N=10,000",
            "",
            "| design | one process attempts/s | two processes attempts/s | factor "
            "| duplicate attempts (same poll < 0.5 s apart) | lateness p99 | app CPU (both) |",
            "|---|---|---|---|---|---|---|",
        ]
        for design, result in zip(("apscheduler", "jobpoller"), two, strict=True):
            if result is None:
                continue
            single = _find(results, "polls-10000", design)
            single_rate = single["rate"] if single else None
            lines.append(
                f"| {_NAMES[design]} | {_num(single_rate)} "
                f"| {_num(result['rate'])} | {_ratio(result['rate'], single_rate)} "
                f"| {result['duplicates']:,} | {_ms(result['lateness']['p99'])} "
                f"| {result['cpu_app']:.0f} % |"
            )
        lines.append("")
    sqlite = [s for s in ("sqlite-1000",) if any(r["scenario"] == s for r in results)]
    if sqlite:
        lines += ["## SQLite (file, WAL), N=1,000, one process", ""]
        lines += _poll_rows(results, sqlite) + [""]
    lines += [
        "## Targets (fastapi-jobpoller, PostgreSQL)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for label, measured, met in targets(results):
        lines.append(
            f"| {label} | {measured} | {'–' if met is None else ('yes' if met else '**no**')} |"
        )
    lines += ["", f"![lateness p99 and achieved rate against N]({plot.name})", ""]
    lines += [
        "## Conditions per run",
        "",
        "| scenario | design | others' CPU before (cores) | load avg before / after "
        "| CPU speed check | machine CPU in window | rest of machine in window "
        "| PostgreSQL, all processes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        before, after = result["loadavg_before"], result["loadavg_after"]
        lines.append(
            f"| {result['scenario']} | {result['design']} | {result['busy_cores_before']:.2f} "
            f"| {before[0]:.2f} / {after[0]:.2f} | {result.get('speed_ms', 0):.1f} ms "
            f"| {result['cpu_machine']:.0f} % "
            f"| {result['cpu_rest']:.0f} % | {result['cpu_pg_all']:.0f} % |"
        )
    path.write_text("\n".join(lines) + "\n")


def write_plot(results: list[Result], path: Path) -> None:
    """Plot lateness p99 and the achieved rate against N for both designs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, late_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for design, marker in (("apscheduler", "s"), ("jobpoller", "o")):
        points = sorted(
            (r["polls"], r["rate"], r["lateness"]["p99"])
            for r in results
            if r["design"] == design
            and r["database"] == "postgresql"
            and r["processes"] == 1
            and r["scenario"].startswith("polls-")
        )
        if not points:
            continue
        drawn = True
        counts = [p[0] for p in points]
        rate_axis.plot(counts, [p[1] for p in points], marker=marker, label=_NAMES[design])
        late_axis.plot(counts, [p[2] for p in points], marker=marker, label=_NAMES[design])
    counts = sorted({r["polls"] for r in results if r["scenario"].startswith("polls-")})
    if counts:
        rate_axis.plot(counts, counts, linestyle=":", color="grey", label="due (N per second)")
    rate_axis.set_xlabel("active 1-second polls (N)")
    rate_axis.set_ylabel("attempts per second")
    rate_axis.set_title("Achieved rate")
    rate_axis.grid(alpha=0.3)
    late_axis.set_xlabel("active 1-second polls (N)")
    late_axis.set_ylabel("lateness p99 (s, log)")
    late_axis.set_yscale("log")
    late_axis.set_title("Lateness p99")
    if drawn:
        rate_axis.legend()
        late_axis.legend()
    late_axis.grid(alpha=0.3, which="both")
    figure.suptitle("PostgreSQL, one process, 2 cores")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
