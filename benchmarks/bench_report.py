"""The results table (markdown) and the plot (PNG) of one benchmark run."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_stats import flags, median_of, pair_ratios, ratio_text, runs
from bench_targets import targets

__all__ = ["write_plot", "write_report"]

Result = dict[str, Any]
Value = Callable[[Result], float | None]
_NAMES = {"apscheduler": "APScheduler baseline", "jobpoller": "fastapi-jobpoller"}


def _label(result: Result) -> str:
    """The design's name, the run's number, and a mark when its window is not clean."""
    name = f"{_NAMES[result['design']]} #{result.get('repeat', 1)}"
    return f"{name} ⚠" if flags(result) else name


def _pair_row(results: list[Result], scenario: str, values: list[Value | None]) -> str:
    """Median pair ratio (and range) of each figure, or an empty cell."""
    cells = []
    for index, value in enumerate(values):
        if value is None:
            cells.append("")
            continue
        cells.append(ratio_text(pair_ratios(results, scenario, value), bold=index == 0))
    return " | ".join(cells)


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


def _spread(figures: dict[str, float | None], fmt: Callable[[float | None], str]) -> str:
    return " / ".join(fmt(figures[key]) for key in ("p50", "p99", "max"))


def _per_attempt(result: Result) -> str:
    if not result.get("rate"):
        return "–"
    return f"{result['cpu_app'] * 1e4 / result['rate']:,.0f} µs"


def _poll_rows(results: list[Result], scenarios: list[str]) -> list[str]:
    header = (
        "| N | design, run | attempts/s (of due) | between attempts p50 / p99 / max "
        "| lateness p50 / p99 / max | stalest poll at end | never attempted "
        "| app CPU (µs per attempt) | PostgreSQL CPU: our backends / whole server | RSS peak "
        "| speed check |"
    )
    rows = [header, "|" + "---|" * 11]
    for scenario in scenarios:
        ordered = sorted(
            runs(results, scenario, "apscheduler") + runs(results, scenario, "jobpoller"),
            key=lambda r: (int(r.get("repeat", 1)), r["design"]),
        )
        for result in ordered:
            if "rate" not in result:
                continue
            pg = result["cpu_pg_backends"]
            rows.append(
                f"| {result['polls']:,} | {_label(result)} "
                f"| {_num(result['rate'])} ({100 * result['rate'] / result['due_rate']:.0f} %) "
                f"| {_spread(result['between'], _s)} | {_spread(result['lateness'], _ms)} "
                f"| {_ms(result['stale_end']['max'])} | {result['unattempted']:,} "
                f"| {result['cpu_app']:.0f} % ({_per_attempt(result)}) "
                f"| {'–' if pg is None else f'{pg:.0f} %'} / {result['cpu_pg_all']:.0f} % "
                f"| {result['rss_peak_mib']:.0f} MiB | {result.get('speed_ms', 0):.1f} ms |"
            )
        if pair_ratios(results, scenario, lambda r: r["rate"]):
            polls = ordered[0]["polls"]
            cells = _pair_row(
                results,
                scenario,
                [
                    lambda r: r["rate"],
                    lambda r: r["between"]["p99"],
                    lambda r: r["lateness"]["p99"],
                    None,
                    None,
                    lambda r: r["cpu_app"],
                    lambda r: r["cpu_pg_backends"],
                    lambda r: r["rss_peak_mib"],
                    None,
                ],
            )
            rows.append(f"| {polls:,} | **ratio ours / baseline, median of pairs** | {cells} |")
    return rows


def _submit_rows(results: list[Result]) -> list[str]:
    lines = [
        "## Submit API (`POST /submit`, 10 keep-alive clients in a separate process)",
        "",
        "Two phases per run, 15 s each: a closed loop (each client sends its next request "
        "when the last is answered: the most requests per second; its latency is mostly "
        "the clients' own queue), then a steady 100 requests/s whose latency counts from "
        "when each request was due (no coordinated omission).",
        "",
        "| while | design, run | closed loop: requests/s | closed loop: latency p50 / p99 / max "
        "| 100 req/s: latency p50 / p99 / max | errors | app CPU "
        "| PostgreSQL CPU (whole server) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, label in (
        ("submit-idle", "idle"),
        ("submit-5000", "5,000 polls active"),
        ("submit-5000-pool15", "5,000 polls active, `database_pool_size=15`"),
    ):
        ordered = sorted(
            runs(results, scenario, "apscheduler") + runs(results, scenario, "jobpoller"),
            key=lambda r: (int(r.get("repeat", 1)), r["design"]),
        )
        for result in ordered:
            submit = result["submit"]
            paced = result.get("submit_paced")
            rps = submit["rps"]
            errors = str(submit["errors"] + (0 if paced is None else paced["errors"]))
            if paced is not None and paced.get("unsent"):
                errors += f" ({paced['unsent']:,} not sent in time)"
            lines.append(
                f"| {label} | {_label(result)} | {_num(rps, 0 if rps >= 10 else 1)} "
                f"| {_spread(submit['latency'], _ms)} "
                f"| {'–' if paced is None else _spread(paced['latency'], _ms)} | {errors} "
                f"| {result['cpu_app']:.0f} % | {result['cpu_pg_all']:.0f} % |"
            )
        if pair_ratios(results, scenario, lambda r: r["submit"]["rps"]):
            cells = _pair_row(
                results,
                scenario,
                [
                    lambda r: r["submit"]["rps"],
                    lambda r: r["submit"]["latency"]["p99"],
                    lambda r: r["submit_paced"]["latency"]["p99"],
                ],
            )
            lines.append(
                f"| {label} | **ratio ours / baseline, median of pairs** | {cells} | | | |"
            )
    lines.append("")
    loaded = [
        r
        for scenario in ("submit-5000", "submit-5000-pool15")
        for design in ("apscheduler", "jobpoller")
        for r in runs(results, scenario, design)
        if "rate" in r
    ]
    if loaded:
        lines.append(
            "Polls during the loaded submit runs: "
            + "; ".join(
                f"{_NAMES[r['design']]}{' (pool 15)' if r['scenario'].endswith('pool15') else ''}"
                f" #{r.get('repeat', 1)} {_num(r['rate'])} attempts/s, "
                f"lateness p99 {_ms(r['lateness']['p99'])}"
                for r in loaded
            )
            + "."
        )
        lines.append("")
    return lines


def _memory_rows(results: list[Result]) -> list[str]:
    lines = [
        "## Memory and start-up",
        "",
        "| stored polls | design, run | RSS peak | RSS at end | first attempt after process start "
        "| after app ready | attempts/s in the window |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario in ("polls-10000", "startup-100000"):
        for design in ("apscheduler", "jobpoller"):
            for result in runs(results, scenario, design):
                lines.append(
                    f"| {result['polls']:,} | {_label(result)} | {result['rss_peak_mib']:.0f} MiB "
                    f"| {result['rss_end_mib']:.0f} MiB "
                    f"| {_ms(result.get('first_attempt_seconds'))} "
                    f"| {_ms(result.get('first_attempt_after_ready'))} "
                    f"| {_num(result.get('rate'))} |"
                )
    lines += [
        "",
        "10,000: the N=10,000 runs above (all due every second). 100,000: polls all "
        "overdue when the process starts (a restart after downtime); RSS sampled over "
        "the window from process start.",
        "",
    ]
    return lines


def _two_process_rows(results: list[Result]) -> list[str]:
    lines = [
        "## Two processes, one PostgreSQL, N=10,000",
        "",
        "| design, run | one process attempts/s (median) | two processes attempts/s | factor "
        "| duplicate attempts (same poll < 0.5 s apart) | lateness p99 | app CPU (both) |",
        "|---|---|---|---|---|---|---|",
    ]
    for design in ("apscheduler", "jobpoller"):
        single = median_of(results, "polls-10000", design, lambda r: r["rate"])
        for result in runs(results, "two-processes-10000", design):
            factor = "–" if not single else f"{result['rate'] / single:.2f}×"
            lines.append(
                f"| {_label(result)} | {_num(single)} "
                f"| {_num(result['rate'])} | {factor} "
                f"| {result['duplicates']:,} | {_ms(result['lateness']['p99'])} "
                f"| {result['cpu_app']:.0f} % |"
            )
    lines.append("")
    return lines


def _conditions_rows(results: list[Result]) -> list[str]:
    lines = [
        "## Conditions per run",
        "",
        "Before each measurement the run waits (bounded) until the rest of the machine is "
        "idle and the speed check is at most 20 % slower than the run's usual speed (the "
        "lower quartile of its checks); after it, the speed "
        "is checked again, both apps' logs are scanned for error lines and PostgreSQL's "
        "deadlock counter (`pg_stat_database.deadlocks`) is read. A run marked ⚠ in the "
        "tables had one of these; the last column says which.",
        "",
        "| scenario | design, run | others' CPU before (cores) | load avg before / after "
        "| speed check before / after (retries) | machine CPU in window "
        "| rest of machine | PostgreSQL, whole server | deadlocks | error lines "
        "| window |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        before, after = result["loadavg_before"], result["loadavg_after"]
        deadlocks = result.get("pg_deadlocks")
        problems = flags(result)
        lines.append(
            f"| {result['scenario']} | {result['design']} #{result.get('repeat', 1)} "
            f"| {result['busy_cores_before']:.2f} "
            f"| {before[0]:.2f} / {after[0]:.2f} | {result.get('speed_ms', 0):.1f} / "
            f"{result.get('speed_after_ms', 0):.1f} ms ({result.get('speed_retries', 0)}) "
            f"| {result['cpu_machine']:.0f} % "
            f"| {result['cpu_rest']:.0f} % | {result['cpu_pg_all']:.0f} % "
            f"| {'–' if deadlocks is None else deadlocks} | {result.get('log_errors', 0)} "
            f"| {'; '.join(problems) if problems else 'clean'} |"
        )
    errors = [r for r in results if r.get("log_first_error")]
    for result in errors:
        lines.append("")
        lines.append(
            f"First error line of {result['scenario']} {result['design']} "
            f"#{result.get('repeat', 1)}: `{result['log_first_error']}`"
        )
    return lines


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
        f"Each scenario ran {meta.get('repeats', 1)} time(s) per design, interleaved "
        "(baseline #1, ours #1, baseline #2, ...); every run has its own row, and the ratio "
        "row gives the median of the pair ratios (ours #k / baseline #k) with their range. "
        f"Speed checks of the run: median {meta.get('speed_median_ms', 0):.1f} ms, usual (lower "
        f"quartile) {meta.get('speed_usual_ms', 0):.1f} ms.",
        "",
        "Definitions: see `benchmarks/bench_analysis.py` and docs/benchmarks.md. Lateness is "
        "measured against the previous attempt's start + 1 s (an upper bound for ours, a "
        "lower bound for the baseline). CPU in % of one core. The speed check is a fixed "
        "pure-Python loop timed before each run (best of 5; larger = slower host). A run "
        "marked ⚠ did not have a clean window (see *Conditions per run*).",
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
        lines += _submit_rows(results)
    if any(r["scenario"] in ("polls-10000", "startup-100000") for r in results):
        lines += _memory_rows(results)
    if any(r["scenario"] == "two-processes-10000" for r in results):
        lines += _two_process_rows(results)
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
    lines += _conditions_rows(results)
    path.write_text("\n".join(lines) + "\n")


def write_plot(results: list[Result], path: Path) -> None:
    """Plot lateness p99 and the achieved rate against N for both designs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, late_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for design, marker in (("apscheduler", "s"), ("jobpoller", "o")):
        scenarios = {
            (r["polls"], r["scenario"])
            for r in results
            if r["design"] == design
            and r["database"] == "postgresql"
            and r["processes"] == 1
            and r["scenario"].startswith("polls-")
        }
        # The median of the runs at each N (every run is in the tables).
        points = sorted(
            (
                polls,
                median_of(results, scenario, design, lambda r: r["rate"]),
                median_of(results, scenario, design, lambda r: r["lateness"]["p99"]),
            )
            for polls, scenario in scenarios
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
