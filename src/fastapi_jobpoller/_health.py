"""What `/health` says: the engine's state turned into a status and its reasons.

`unavailable` (HTTP 503) when this process cannot make progress: its dispatch loop is not
running, the database does not answer, or cycles have failed for a long stretch.
`degraded` (HTTP 200) when it works but something needs a look: a few failed cycles,
stuck threads, a saturated thread pool, rows set aside, jobs no running process can run.
"""

from typing import Literal

from ._engine.dispatcher import Dispatcher
from .models import Health

__all__ = ["assess"]

# Consecutive failed dispatch cycles (retried 0.1 s to 2 s apart) that make the status
# degraded, then unavailable: a blip is not worth an alert; a minute of failures is.
_FAILED_CYCLES_DEGRADED = 3
_FAILED_CYCLES_UNAVAILABLE = 30


def assess(
    dispatcher: Dispatcher | None,
    *,
    database_ok: bool,
    schema_ready: bool,
    worker_id: str,
    role: Literal["engine", "worker", "client"] = "engine",
    quarantined: int | None = None,
    workers: int | None = None,
) -> Health:
    """Return this process's health from its engine and a fresh database check.

    `quarantined`: rows set aside, just counted; None to use the engine's last re-check.
    `workers`: live processes in the registry. A client has no engine: only its database
    counts."""
    engine_alive = dispatcher is not None and dispatcher.alive
    down: list[str] = []
    if not engine_alive and role != "client":
        down.append("the engine's dispatch loop is not running")
    if not database_ok:
        down.append("the database does not answer")
    elif not schema_ready:
        down.append("the tables have not been checked since this process started")
    process = {"database_ok": database_ok, "worker_id": worker_id, "role": role}
    if dispatcher is None:  # a client, or an engine not started
        return Health.model_validate(
            {
                **process,
                "status": "unavailable" if down else "ok",
                "engine_alive": False,
                "in_flight": 0,
                "workers": workers,
                "quarantined": quarantined or 0,
                "problems": down,
            }
        )
    cycles, upkeep = dispatcher.cycles, dispatcher.upkeep.report
    if quarantined is None:
        quarantined = upkeep.quarantined
    failing = f"{cycles.failed_cycles} dispatch cycles failed in a row: {cycles.last_failure}"
    if cycles.failed_cycles >= _FAILED_CYCLES_UNAVAILABLE:
        down.append(failing)
    warnings = _warnings(dispatcher, quarantined)
    if _FAILED_CYCLES_DEGRADED <= cycles.failed_cycles < _FAILED_CYCLES_UNAVAILABLE:
        warnings.insert(0, failing)
    return Health.model_validate(
        {
            **process,
            "status": "unavailable" if down else "degraded" if warnings else "ok",
            "problems": down + warnings,
        }
        | _engine_figures(dispatcher, quarantined)
        | {"engine_alive": engine_alive, "workers": workers}
    )


def _engine_figures(dispatcher: Dispatcher, quarantined: int) -> dict[str, object]:
    """Return what /health reports of this process's engine."""
    cycles, threads, upkeep = dispatcher.cycles, dispatcher.threads, dispatcher.upkeep.report
    return {
        "in_flight": dispatcher.in_flight,
        "last_cycle_at": cycles.last_success_at,
        "failed_cycles": cycles.failed_cycles,
        "threads_busy": threads.busy,
        "threads_stuck": threads.stuck,
        "threads_waiting": threads.waiting,
        "quarantined": quarantined,
        "unclaimed_jobs": len(upkeep.unclaimed_jobs),
        "unclaimed_polls": sum(upkeep.unclaimed_polls.values()),
    }


def _warnings(dispatcher: Dispatcher, quarantined: int) -> list[str]:
    """Return what needs a look though the engine works: threads, set-aside rows, jobs."""
    threads, upkeep = dispatcher.threads, dispatcher.upkeep.report
    unclaimed, unclaimed_polls = upkeep.unclaimed_jobs, sum(upkeep.unclaimed_polls.values())
    warnings = []
    if threads.stuck:
        warnings.append(f"{threads.stuck} def calls are stuck past attempt_timeout")
    if threads.waiting and threads.busy >= threads.size:
        warnings.append(f"every thread is busy and {threads.waiting} calls wait for one")
    if quarantined:
        warnings.append(f"{quarantined} rows are set aside (see /quarantine)")
    if unclaimed:
        warnings.append(
            f"{len(unclaimed)} jobs are overdue: no running process registers their function"
        )
    if unclaimed_polls:
        warnings.append(
            f"{unclaimed_polls} polls are overdue: no running process registers their function"
        )
    return warnings
