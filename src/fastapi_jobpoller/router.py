"""The management API: `get_jobs_router(poller)` builds it, closing over the poller.

Errors are mapped here, and only here: our exceptions and request validation errors
become JSON `ErrorResponse` bodies with a stable `code`, declared in OpenAPI per route.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request

from .api_models import ErrorResponse, FunctionsResponse, JobCreate, JobUpdate, Page, PollCreate
from .auth import AccessDeniedError, AuthenticationError, access_dependency
from .exceptions import (
    ConflictError,
    DatabaseUnavailableError,
    FunctionNotFoundError,
    InvalidArgumentsError,
    InvalidStateError,
    InvalidTriggerError,
    JobNotFoundError,
    JobPollerError,
    NotRunningError,
    PollNotFoundError,
)
from .models import Health, JobInfo, JobRunInfo, PollInfo, PollOptions, PollState
from .poller import JobPoller

__all__ = ["get_jobs_router"]

logger = logging.getLogger(__name__)

_STATUS_BY_ERROR: tuple[tuple[type[JobPollerError], int], ...] = (
    (AuthenticationError, status.HTTP_401_UNAUTHORIZED),
    (AccessDeniedError, status.HTTP_403_FORBIDDEN),
    (PollNotFoundError, status.HTTP_404_NOT_FOUND),
    (JobNotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (InvalidStateError, status.HTTP_409_CONFLICT),
    (FunctionNotFoundError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (InvalidArgumentsError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (InvalidTriggerError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (DatabaseUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (NotRunningError, status.HTTP_503_SERVICE_UNAVAILABLE),
)
# Ids and names never hold a NUL character (PostgreSQL cannot store one in text).
_NO_NUL = r"^[^\x00]*$"
# Seconds a client should wait before retrying after a 503.
_RETRY_AFTER_SECONDS = "5"


def _error_response(
    status_code: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body = ErrorResponse(code=code, detail=detail, errors=errors)
    headers = {"Retry-After": _RETRY_AFTER_SECONDS} if status_code == 503 else None
    if status_code == 401:
        headers = {"WWW-Authenticate": "ApiKey"}
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status_code, headers=headers
    )


def _status_of(error: JobPollerError) -> int:
    for error_type, status_code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status_code
    return status.HTTP_400_BAD_REQUEST


class _ErrorMappingRoute(APIRoute):
    """A route that answers our errors and validation errors as `ErrorResponse`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [
                    {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
                    for e in exc.errors()
                ]
                summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
                return _error_response(
                    422, "validation_error", summary or "invalid request", jsonable_encoder(errors)
                )
            except JobPollerError as exc:
                details: list[dict[str, Any]] | None = getattr(exc, "errors", None) or None
                return _error_response(_status_of(exc), exc.code, str(exc), details)
            except HTTPException as exc:
                # FastAPI answers a body that is not even text (bad UTF-8) or nests too
                # deep for the JSON parser with a bare, undeclared 400; answer it like any
                # other undecodable JSON body. The host's own HTTPExceptions pass through.
                if not _is_body_parse_error(exc):
                    raise
                errors = [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
                return _error_response(
                    422, "validation_error", "body: the request body is not valid JSON", errors
                )

        return handle


def _is_body_parse_error(exc: HTTPException) -> bool:
    return (
        exc.status_code == status.HTTP_400_BAD_REQUEST
        and exc.detail == "There was an error parsing the body"
        and isinstance(exc.__cause__, ValueError | RecursionError)
    )


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "No valid API key",
        403: "Not allowed, or no auth configured",
        404: "Unknown id",
        409: "Conflicting id or state",
        422: "Invalid request, function, trigger or arguments",
        503: "Database unavailable or engine not running",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    return {
        "items": items,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(items) == limit else None,
    }


def get_jobs_router(
    poller: JobPoller,
    *,
    dependencies: Sequence[DependsParam] = (),
    write_dependencies: Sequence[DependsParam] = (),
    tags: Sequence[str] = ("jobpoller",),
) -> APIRouter:
    """Build the management API for `poller` (without a prefix: the host chooses it).

    Args:
        poller: The poller the routes act on.
        dependencies: The host's auth dependencies for every route (health excepted).
        write_dependencies: Extra dependencies for the routes that change something.
        tags: OpenAPI tags of the routes.

    Every route but `/health` is refused to anonymous callers unless an API key setting
    or `dependencies` protect it (see `auth.py`), or `auth_disabled` is set.
    """
    settings = poller.settings
    read_guard = access_dependency(settings, "read", host_dependencies=dependencies)
    write_guard = access_dependency(
        settings, "write", host_dependencies=[*dependencies, *write_dependencies]
    )
    read = [*dependencies, Depends(read_guard)]
    write = [*dependencies, *write_dependencies, Depends(write_guard)]
    router = APIRouter(route_class=_ErrorMappingRoute, tags=list(tags))

    Limit = Annotated[
        int,
        Query(ge=1, le=settings.max_page_size, description="Items per page."),
    ]
    Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")]
    PollId = Annotated[str, Path(min_length=1, max_length=191, pattern=_NO_NUL)]
    JobId = Annotated[str, Path(min_length=1, max_length=191, pattern=_NO_NUL)]
    default_limit = min(100, settings.max_page_size)

    @router.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "Engine or database down"}},
        summary="Is this process's engine alive and its database reachable",
    )
    async def health(response: Response) -> Health:
        report = await poller.health()
        if report.status != "ok":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report

    @router.get(
        "/functions",
        response_model=FunctionsResponse,
        dependencies=read,
        responses=_responses(401, 403),
        summary="List the registered function names",
    )
    async def list_functions() -> FunctionsResponse:
        return FunctionsResponse(
            poll_functions=poller.function_names("poll"),
            job_functions=poller.function_names("job"),
            callbacks=poller.function_names("callback"),
        )

    # -- polls -----------------------------------------------------------------------

    @router.get(
        "/polls",
        response_model=Page[PollInfo],
        dependencies=read,
        responses=_responses(401, 403, 422, 503),
        summary="List polls, newest first",
    )
    async def list_polls(
        state: Annotated[list[PollState] | None, Query()] = None,
        function: Annotated[str | None, Query(max_length=191, pattern=_NO_NUL)] = None,
        limit: Limit = default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        items = await poller.list_polls(
            state=state or None, function=function, limit=limit, offset=offset
        )
        return _page(items, limit, offset)

    @router.post(
        "/polls",
        response_model=PollInfo,
        status_code=status.HTTP_201_CREATED,
        dependencies=write,
        responses={
            200: {"model": PollInfo, "description": "A poll with this id and definition exists"},
            **_responses(401, 403, 409, 422, 503),
        },
        summary="Start a poll of a registered poll function (idempotent by id)",
    )
    async def start_poll(body: PollCreate, response: Response) -> PollInfo:
        options = PollOptions(**body.model_dump(include=set(PollOptions.model_fields)))
        poll, created = await poller.submit_poll(
            body.function, body.arguments, poll_id=body.id, options=options
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return poll

    @router.get(
        "/polls/{poll_id}",
        response_model=PollInfo,
        dependencies=read,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Get a poll",
    )
    async def get_poll(poll_id: PollId) -> PollInfo:
        return await poller.get_poll(poll_id)

    @router.get(
        "/polls/{poll_id}/wait",
        response_model=PollInfo,
        dependencies=read,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Hold the request until the poll ends (or the timeout passes)",
    )
    async def wait_for_poll(
        poll_id: PollId,
        wait_seconds: Annotated[
            float,
            Query(
                alias="timeout",
                ge=0,
                le=settings.max_wait_seconds,
                description="Longest wait, seconds.",
            ),
        ] = min(30.0, settings.max_wait_seconds),
    ) -> PollInfo:
        return await poller.wait_for_poll(poll_id, timeout=wait_seconds)

    @router.post(
        "/polls/{poll_id}/cancel",
        response_model=PollInfo,
        dependencies=write,
        responses=_responses(401, 403, 404, 409, 422, 503),
        summary="Cancel a poll that has not ended",
    )
    async def cancel_poll(poll_id: PollId) -> PollInfo:
        return await poller.cancel_poll(poll_id)

    # -- jobs ------------------------------------------------------------------------

    @router.get(
        "/jobs",
        response_model=Page[JobInfo],
        dependencies=read,
        responses=_responses(401, 403, 422, 503),
        summary="List scheduled jobs by id",
    )
    async def list_jobs(
        function: Annotated[str | None, Query(max_length=191, pattern=_NO_NUL)] = None,
        limit: Limit = default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        items = await poller.list_jobs(function=function, limit=limit, offset=offset)
        return _page(items, limit, offset)

    @router.post(
        "/jobs",
        response_model=JobInfo,
        status_code=status.HTTP_201_CREATED,
        dependencies=write,
        responses=_responses(401, 403, 409, 422, 503),
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
        dependencies=read,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Get a scheduled job",
    )
    async def get_job(job_id: JobId) -> JobInfo:
        return await poller.get_job(job_id)

    @router.patch(
        "/jobs/{job_id}",
        response_model=JobInfo,
        dependencies=write,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Change a job's trigger, arguments or limits",
    )
    async def modify_job(job_id: JobId, body: Annotated[JobUpdate, Body()]) -> JobInfo:
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
        dependencies=write,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Remove a scheduled job (its run history stays)",
    )
    async def remove_job(job_id: JobId) -> None:
        await poller.remove_job(job_id)

    @router.post(
        "/jobs/{job_id}/pause",
        response_model=JobInfo,
        dependencies=write,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Pause a job's ticks",
    )
    async def pause_job(job_id: JobId) -> JobInfo:
        return await poller.pause_job(job_id)

    @router.post(
        "/jobs/{job_id}/resume",
        response_model=JobInfo,
        dependencies=write,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Resume a paused job from its next tick",
    )
    async def resume_job(job_id: JobId) -> JobInfo:
        return await poller.resume_job(job_id)

    @router.post(
        "/jobs/{job_id}/run",
        response_model=JobRunInfo,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=write,
        responses=_responses(401, 403, 404, 422, 503),
        summary="Run a job once now, outside its schedule",
    )
    async def run_job_now(job_id: JobId) -> JobRunInfo:
        return await poller.run_job_now(job_id)

    return router
