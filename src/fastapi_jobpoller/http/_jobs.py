"""The job routes of the management API: list, add, get, change, remove, pause,
resume, run now."""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from ..models import JobInfo, JobRunInfo
from ._params import NameQuery, Offset, PathId, RouteContext, page, responses
from .schemas import JobCreate, JobUpdate, Page

__all__ = ["add_job_routes"]


def add_job_routes(router: APIRouter, context: RouteContext) -> None:
    """Add the `/jobs` routes to `router`."""
    poller, settings = context.poller, context.poller.settings
    Limit = Annotated[int, Query(ge=1, le=settings.max_page_size, description="Page size.")]
    default_limit = context.default_limit

    @router.get(
        "/jobs",
        response_model=Page[JobInfo],
        dependencies=context.read,
        responses=responses(401, 403, 422, 503),
        summary="List scheduled jobs by id",
    )
    async def list_jobs(
        function: NameQuery = None,
        limit: Limit = default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        items = await poller.list_jobs(function=function, limit=limit, offset=offset)
        return page(items, limit, offset)

    @router.post(
        "/jobs",
        response_model=JobInfo,
        status_code=status.HTTP_201_CREATED,
        dependencies=context.write,
        responses=responses(401, 403, 409, 413, 422, 503),
        summary="Schedule a registered job function",
    )
    async def add_job(body: JobCreate) -> JobInfo:
        return await poller.add_job(
            body.function,
            body.trigger,
            arguments=body.arguments,
            job_id=body.id,
            replace_existing=body.replace_existing,
            paused=body.paused,
            misfire_grace_time=body.misfire_grace_time,
            coalesce=body.coalesce,
            max_instances=body.max_instances,
        )

    @router.get(
        "/jobs/{job_id}",
        response_model=JobInfo,
        dependencies=context.read,
        responses=responses(401, 403, 404, 422, 503),
        summary="Get a scheduled job",
    )
    async def get_job(job_id: PathId) -> JobInfo:
        return await poller.get_job(job_id)

    @router.patch(
        "/jobs/{job_id}",
        response_model=JobInfo,
        dependencies=context.write,
        responses=responses(401, 403, 404, 413, 422, 503),
        summary="Change a job's trigger, arguments or limits",
    )
    async def modify_job(job_id: PathId, body: Annotated[JobUpdate, Body()]) -> JobInfo:
        return await poller.modify_job(
            job_id,
            trigger=body.trigger,
            arguments=body.arguments,
            misfire_grace_time=body.misfire_grace_time,
            coalesce=body.coalesce,
            max_instances=body.max_instances,
        )

    @router.delete(
        "/jobs/{job_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        dependencies=context.write,
        responses=responses(401, 403, 404, 422, 503),
        summary="Remove a scheduled job (its run history stays)",
    )
    async def remove_job(job_id: PathId) -> None:
        await poller.remove_job(job_id)

    @router.post(
        "/jobs/{job_id}/pause",
        response_model=JobInfo,
        dependencies=context.write,
        responses=responses(401, 403, 404, 422, 503),
        summary="Pause a job's ticks",
    )
    async def pause_job(job_id: PathId) -> JobInfo:
        return await poller.pause_job(job_id)

    @router.post(
        "/jobs/{job_id}/resume",
        response_model=JobInfo,
        dependencies=context.write,
        responses=responses(401, 403, 404, 422, 503),
        summary="Resume a paused job from its next tick",
    )
    async def resume_job(job_id: PathId) -> JobInfo:
        return await poller.resume_job(job_id)

    @router.post(
        "/jobs/{job_id}/run",
        response_model=JobRunInfo,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=context.write,
        responses=responses(401, 403, 404, 422, 503),
        summary="Run a job once now, outside its schedule",
    )
    async def run_job_now(job_id: PathId) -> JobRunInfo:
        return await poller.run_job_now(job_id)
