"""The management API: `get_jobs_router(poller)` builds it, closing over the poller.

The routes are added by one module per resource (`_polls.py`, `_jobs.py`, `_history.py`);
errors are mapped by the route class of `_errors.py`, which `_gate.py` extends with the
key and size checks made before a body is read.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
import logging
from collections.abc import Sequence

from fastapi import APIRouter, Depends, Response, status
from fastapi.params import Depends as DependsParam

from ..models import Health, WorkerInfo
from ..poller import JobPoller
from ._auth import access_dependency
from ._errors import jobpoller_error_handler
from ._gate import GatedRoute
from ._history import add_history_routes
from ._jobs import add_job_routes
from ._params import RouteContext, responses
from ._polls import add_poll_routes
from ._quarantine import add_quarantine_routes
from .schemas import FunctionsResponse

__all__ = ["get_jobs_router", "jobpoller_error_handler"]

logger = logging.getLogger(__name__)


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
    or `dependencies` protect it (see `_auth.py`), or `auth_disabled` is set.
    """
    settings = poller.settings
    if settings.auth_disabled:
        logger.warning(
            "JOBPOLLER_AUTH_DISABLED is on: anyone who reaches this app can read and "
            "change its polls and jobs%s; use it for local development only",
            " (the API keys that are also set are ignored)"
            if settings.api_key or settings.read_api_key
            else "",
            extra={"event": "auth_disabled"},
        )
    read_guard = access_dependency(settings, "read", host_dependencies=dependencies)
    write_guard = access_dependency(
        settings, "write", host_dependencies=[*dependencies, *write_dependencies]
    )
    read = [*dependencies, Depends(read_guard)]
    write = [*dependencies, *write_dependencies, Depends(write_guard)]
    router = APIRouter(route_class=GatedRoute, tags=list(tags))

    @router.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "Engine or database down"}},
        summary="Is this process's engine alive and its database reachable",
    )
    async def health(response: Response) -> Health:
        report = await poller.health()
        if report.status == "unavailable":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report

    @router.get(
        "/functions",
        response_model=FunctionsResponse,
        dependencies=read,
        responses=responses(401, 403),
        summary="List the registered function names",
    )
    async def list_functions() -> FunctionsResponse:
        return FunctionsResponse(
            poll_functions=poller.function_names("poll"),
            job_functions=poller.function_names("job"),
            callbacks=poller.function_names("callback"),
        )

    @router.get(
        "/workers",
        response_model=list[WorkerInfo],
        dependencies=read,
        responses=responses(401, 403, 503),
        summary="List the processes sharing this database: engines, workers and clients",
    )
    async def list_workers() -> list[WorkerInfo]:
        return await poller.list_workers()

    context = RouteContext(poller=poller, read=read, write=write)
    add_poll_routes(router, context)
    add_job_routes(router, context)
    add_history_routes(router, context)
    add_quarantine_routes(router, context)

    return router
