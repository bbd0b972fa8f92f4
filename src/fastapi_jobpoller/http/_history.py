"""The history routes of the management API (job runs, poll attempts) and metrics."""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BeforeValidator

from ..models import JobRunInfo, JobRunState, PollAttemptInfo
from ._params import NameQuery, Offset, PathId, RouteContext, page, responses
from .schemas import Page

__all__ = ["add_history_routes"]

AttemptOutcome = Literal["pending", "error", "succeeded", "failed", "timed_out"]
"""What a recorded attempt did (the `outcome` of `PollAttemptInfo`)."""


def _not_a_number(value: object) -> object:
    if isinstance(value, int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("give an ISO 8601 date-time with a time zone, e.g. 2030-01-01T00:00:00Z")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
IsoTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


def add_history_routes(router: APIRouter, context: RouteContext) -> None:
    """Add `/runs`, `/polls/{id}/attempts` and, if enabled, `/metrics` to `router`."""
    poller, settings = context.poller, context.poller.settings
    Limit = Annotated[int, Query(ge=1, le=settings.max_page_size, description="Page size.")]
    # With a time zone (`Z` or `+02:00`): a naive time would be ambiguous. ISO 8601 only:
    # pydantic would read a bare number as a Unix timestamp.
    Since = Annotated[
        IsoTime | None, Query(description="Earliest time, inclusive (ISO 8601, with a zone).")
    ]
    Until = Annotated[
        IsoTime | None, Query(description="Latest time, exclusive (ISO 8601, with a zone).")
    ]
    default_limit = context.default_limit

    @router.get(
        "/runs",
        response_model=Page[JobRunInfo],
        dependencies=context.read,
        responses=responses(401, 403, 422, 503),
        summary="List runs of scheduled jobs, latest tick first",
    )
    async def list_runs(
        job_id: NameQuery = None,
        state: Annotated[list[JobRunState] | None, Query()] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        items = await poller.list_job_runs(
            job_id=job_id, state=state, since=since, until=until, limit=limit, offset=offset
        )
        return page(items, limit, offset)

    @router.get(
        "/runs/{run_id}",
        response_model=JobRunInfo,
        dependencies=context.read,
        responses=responses(401, 403, 404, 422, 503),
        summary="Get one run of a scheduled job",
    )
    async def get_run(run_id: PathId) -> JobRunInfo:
        return await poller.get_job_run(run_id)

    @router.get(
        "/polls/{poll_id}/attempts",
        response_model=Page[PollAttemptInfo],
        dependencies=context.read,
        responses=responses(401, 403, 404, 422, 503),
        summary="List a poll's recorded attempts, latest first",
    )
    async def list_attempts(
        poll_id: PathId,
        outcome: Annotated[list[AttemptOutcome] | None, Query()] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        await poller.get_poll(poll_id)  # 404 for an unknown poll, not an empty page
        items = await poller.list_poll_attempts(
            poll_id=poll_id, outcome=outcome, since=since, until=until, limit=limit, offset=offset
        )
        return page(items, limit, offset)

    if not settings.metrics_enabled:
        return
    from ..metrics import PollerMetrics

    metrics = PollerMetrics(poller)

    @router.get(
        "/metrics",
        dependencies=[] if settings.metrics_public else context.read,
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
        summary="Prometheus metrics of this process (polls by state: all processes)",
    )
    async def scrape() -> Response:
        return Response(await metrics.render(), media_type=metrics.content_type)
