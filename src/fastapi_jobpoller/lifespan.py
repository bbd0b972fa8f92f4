"""`mount_scheduler(app)`: the one line that adds the poller to a FastAPI app."""

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.params import Depends as DependsParam

from .exceptions import ConfigurationError
from .http import get_jobs_router
from .poller import JobPoller

__all__ = ["mount_scheduler"]

logger = logging.getLogger(__name__)

# Where the poller lives on `app.state`, for endpoints: `request.app.state.jobpoller`.
STATE_ATTRIBUTE = "jobpoller"


def mount_scheduler(
    app: FastAPI,
    poller: JobPoller | None = None,
    *,
    prefix: str | None = None,
    tags: Sequence[str] = ("jobpoller",),
    dependencies: Sequence[DependsParam] = (),
    write_dependencies: Sequence[DependsParam] = (),
) -> JobPoller:
    """Run `poller` with the app and serve its management API.

    The app's own lifespan keeps running around the poller's: the host's starts first,
    and the poller stops before the host's resources close. Nothing starts before the
    app's lifespan does, so `uvicorn --workers N` and `--reload` are safe.

    Args:
        app: The FastAPI app.
        poller: The poller to run; by default one built from `JOBPOLLER_*` settings.
        prefix: Route prefix; default: the `api_prefix` setting (`/jobpoller`).
        tags: OpenAPI tags of the routes.
        dependencies: The host's auth dependencies for the routes.
        write_dependencies: Extra dependencies for the routes that change something.

    Returns:
        The poller, also at `app.state.jobpoller`.

    Raises:
        ConfigurationError: A poller is mounted on this app already.
    """
    if getattr(app.state, STATE_ATTRIBUTE, None) is not None:
        raise ConfigurationError("mount_scheduler was already called on this app")
    poller = poller if poller is not None else JobPoller()
    router = get_jobs_router(
        poller, dependencies=dependencies, write_dependencies=write_dependencies, tags=tags
    )
    app.include_router(router, prefix=poller.settings.api_prefix if prefix is None else prefix)
    host_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(lifespan_app: Any) -> AsyncIterator[Any]:
        async with host_lifespan(lifespan_app) as state:
            async with poller:
                yield state

    app.router.lifespan_context = lifespan
    setattr(app.state, STATE_ATTRIBUTE, poller)
    return poller
