"""Prometheus metrics, fed by engine events (`pip install fastapi-jobpoller[metrics]`).

Counters and histograms count what this process did; the polls-by-state gauge is read
from the database at scrape time, so every process reports the same totals there.
"""

from typing import TYPE_CHECKING, Any

from .events import Event, EventType
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .poller import JobPoller

__all__ = ["PollerMetrics"]

# Buckets in seconds, from a quick status check to a long batch job.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

_POLL_ATTEMPT_OUTCOMES = {
    EventType.POLL_PENDING,
    EventType.POLL_SUCCEEDED,
    EventType.POLL_FAILED,
    EventType.POLL_TIMED_OUT,
}
_JOB_RUN_OUTCOMES = {
    EventType.JOB_EXECUTED,
    EventType.JOB_ERROR,
    EventType.JOB_MISSED,
    EventType.JOB_MAX_INSTANCES,
}


class PollerMetrics:
    """The metrics of one poller, in a registry of their own.

    Args:
        poller: The poller to observe; the metrics subscribe to its events.
        registry: A `prometheus_client.CollectorRegistry`; by default a new one.

    Raises:
        ConfigurationError: prometheus_client is not installed.
    """

    def __init__(self, poller: "JobPoller", registry: Any = None) -> None:
        try:
            import prometheus_client as prometheus
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "metrics need prometheus_client: pip install 'fastapi-jobpoller[metrics]'"
            ) from None
        self._prometheus = prometheus
        self._poller = poller
        self.registry = registry if registry is not None else prometheus.CollectorRegistry()
        self.job_runs = prometheus.Counter(
            "jobpoller_job_runs",
            "Scheduled-job ticks by outcome (executed, error, missed, max_instances).",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.poll_attempts = prometheus.Counter(
            "jobpoller_poll_attempts",
            "Poll attempts by the state they left the poll in; errors are `error`.",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.callback_failures = prometheus.Counter(
            "jobpoller_callback_failures",
            "Terminal callbacks that raised (they are delivered again later).",
            ["callback"],
            registry=self.registry,
        )
        self.duration = prometheus.Histogram(
            "jobpoller_duration_seconds",
            "How long job runs and poll attempts took.",
            ["kind", "function"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lateness = prometheus.Histogram(
            "jobpoller_lateness_seconds",
            "Start minus due time of job runs and poll attempts.",
            ["kind"],
            buckets=_LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.polls = prometheus.Gauge(
            "jobpoller_polls",
            "Stored polls by state (all processes; read at scrape time).",
            ["state"],
            registry=self.registry,
        )
        self.leases = prometheus.Gauge(
            "jobpoller_leases_held",
            "Attempts and job runs this process holds a lease on.",
            registry=self.registry,
        )
        self._engine_gauges(prometheus)
        poller.add_listener(self.observe)

    def _engine_gauges(self, prometheus: Any) -> None:
        """Create the gauges read from this process's health at scrape time."""
        self.threads_stuck = prometheus.Gauge(
            "jobpoller_threads_stuck",
            "def calls of this process still running past attempt_timeout.",
            registry=self.registry,
        )
        self.quarantined = prometheus.Gauge(
            "jobpoller_quarantined_rows",
            "Polls and jobs set aside because their stored rows cannot be used.",
            registry=self.registry,
        )
        self.failed_cycles = prometheus.Gauge(
            "jobpoller_failed_cycles",
            "Dispatch cycles of this process failed in a row.",
            registry=self.registry,
        )

    async def observe(self, event: Event) -> None:
        """Update the series from one event."""
        function = event.function or ""
        if event.type in _POLL_ATTEMPT_OUTCOMES and event.duration is not None:
            # Only an attempt that ran has a duration (not a poll found past its deadline,
            # nor one whose function this process lacks); an attempt that raised has the
            # outcome `error`, as in the attempt history.
            self.poll_attempts.labels(function, event.outcome or event.type.value).inc()
            self.duration.labels("poll", function).observe(event.duration)
        elif event.type in _JOB_RUN_OUTCOMES:
            self.job_runs.labels(function, event.type.value.removeprefix("job_")).inc()
            if event.duration is not None:
                self.duration.labels("job", function).observe(event.duration)
        elif event.type is EventType.POLL_CALLBACK_FAILED:
            self.callback_failures.labels(event.details.get("callback", "")).inc()
        if event.started_at is not None and event.scheduled_at is not None:
            kind = "job" if event.job_id is not None else "poll"
            late = (event.started_at - event.scheduled_at).total_seconds()
            if event.type in (EventType.JOB_SUBMITTED, EventType.POLL_ATTEMPT_STARTED):
                self.lateness.labels(kind).observe(max(late, 0.0))

    async def render(self) -> bytes:
        """Refresh the database-backed gauges and return the exposition text."""
        counts = await self._poller.count_polls_by_state()
        for state, count in counts.items():
            self.polls.labels(state.value).set(count)
        self.leases.set(self._poller.in_flight)
        health = await self._poller.health()
        self.threads_stuck.set(health.threads_stuck)
        self.quarantined.set(health.quarantined)
        self.failed_cycles.set(health.failed_cycles)
        body: bytes = self._prometheus.generate_latest(self.registry)
        return body

    @property
    def content_type(self) -> str:
        """Return the exposition format's content type."""
        value: str = self._prometheus.CONTENT_TYPE_LATEST
        return value
