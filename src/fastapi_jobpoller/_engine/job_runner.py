"""One run of a scheduled job: call the function, record how it ended, tell listeners."""

import time
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

from .._storage.run_store import RunStore
from .._storage.tables import utcnow
from ..events import EventType
from ..models import JobRunState
from .caller import FunctionCaller, describe, format_traceback, is_json
from .event_bus import EventBus
from .outages import write_through_outages
from .registry import Registry
from .thread_slots import NoFreeThreadError

__all__ = ["JobRunner"]

_EVENT_OF_UNRUN_STATE = {
    JobRunState.MISSED: EventType.JOB_MISSED,
    JobRunState.SKIPPED: EventType.JOB_MAX_INSTANCES,
    # Given up on after its workers were lost too often.
    JobRunState.FAILED: EventType.JOB_ERROR,
}


# A run that found no free thread is tried again this much later.
_NO_THREAD_RETRY_SECONDS = 1.0


class JobRunner:
    """Runs the job runs this process claimed."""

    def __init__(
        self,
        *,
        registry: Registry,
        caller: FunctionCaller,
        events: EventBus,
        store: RunStore,
        database_pool: Executor,
        worker_id: str,
    ) -> None:
        self._registry = registry
        self._caller = caller
        self._events = events
        self._store = store
        self._database_pool = database_pool
        self._worker_id = worker_id

    def _event(self, event_type: EventType, run: dict[str, Any], **fields: Any) -> None:
        self._events.publish(
            event_type,
            self._worker_id,
            job_id=run["job_id"],
            run_id=run["id"],
            function=run["function"],
            scheduled_at=run["scheduled_at"],
            attempt=run["attempt"],
            **fields,
        )

    def report_unrun(self, run: dict[str, Any]) -> None:
        """Tell listeners about a run recorded without running: missed, skipped (max
        instances), or failed after its workers were lost too often."""
        self._event(
            _EVENT_OF_UNRUN_STATE[JobRunState(run["state"])],
            run,
            outcome=run["state"],
            error=run["error"],
        )

    def report_quarantined(self, job: dict[str, Any]) -> None:
        """Tell listeners (once) that a job was set aside: its stored row is unusable."""
        self._events.publish(
            EventType.JOB_QUARANTINED,
            self._worker_id,
            job_id=job["id"],
            function=job["function"],
            scheduled_at=job["next_run_at"],
            error=job["reason"],
        )

    async def run(self, run: dict[str, Any]) -> None:
        """Execute a claimed run and store its outcome."""
        self._event(EventType.JOB_SUBMITTED, run, started_at=run["started_at"])
        started = time.monotonic()
        state, result, error, trace = JobRunState.SUCCEEDED, None, None, None
        try:
            function = self._registry.get("job", run["function"])
            value = await self._caller.call(function, **function.bind_arguments(run["arguments"]))
            result = value if is_json(value) else repr(value)
        except NoFreeThreadError:
            # It never ran: the run goes back to the queue, its attempt uncounted.
            await write_through_outages(
                self._database_pool,
                self._store.put_back,
                run,
                worker=self._worker_id,
                at=utcnow() + timedelta(seconds=_NO_THREAD_RETRY_SECONDS),
            )
            return
        except Exception as exc:
            state, error, trace = JobRunState.FAILED, describe(exc), format_traceback(exc)
            if isinstance(exc, TimeoutError):
                error = f"run timed out: {error}"
        duration = time.monotonic() - started
        landed = await write_through_outages(
            self._database_pool,
            self._store.finish_run,
            run,
            worker=self._worker_id,
            state=state,
            result=result,
            error=error,
            traceback=trace,
            now=utcnow(),
        )
        if not landed:
            # The lease was lost meanwhile: the process that holds the run now reports it.
            return
        self._event(
            EventType.JOB_EXECUTED if state is JobRunState.SUCCEEDED else EventType.JOB_ERROR,
            run,
            started_at=run["started_at"],
            duration=duration,
            outcome=state.value,
            result=result,
            error=error,
            traceback=trace,
        )
