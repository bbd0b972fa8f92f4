"""The poll routes of the management API: list, start, get, wait for, cancel."""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from ..models import PollInfo, PollOptions, PollState
from ._params import NameQuery, Offset, PathId, RouteContext, page, responses
from .schemas import Page, PollCreate

__all__ = ["add_poll_routes"]


def add_poll_routes(router: APIRouter, context: RouteContext) -> None:
    """Add the `/polls` routes to `router`."""
    poller, settings = context.poller, context.poller.settings
    Limit = Annotated[int, Query(ge=1, le=settings.max_page_size, description="Page size.")]
    default_limit = context.default_limit

    @router.get(
        "/polls",
        response_model=Page[PollInfo],
        dependencies=context.read,
        responses=responses(401, 403, 422, 503),
        summary="List polls, newest first",
    )
    async def list_polls(
        state: Annotated[list[PollState] | None, Query()] = None,
        function: NameQuery = None,
        limit: Limit = default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        items = await poller.list_polls(
            state=state or None, function=function, limit=limit, offset=offset
        )
        return page(items, limit, offset)

    @router.post(
        "/polls",
        response_model=PollInfo,
        status_code=status.HTTP_201_CREATED,
        dependencies=context.write,
        responses={
            200: {"model": PollInfo, "description": "A poll with this id and definition exists"},
            **responses(401, 403, 409, 413, 422, 503),
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
        dependencies=context.read,
        responses=responses(401, 403, 404, 422, 503),
        summary="Get a poll",
    )
    async def get_poll(poll_id: PathId) -> PollInfo:
        return await poller.get_poll(poll_id)

    @router.get(
        "/polls/{poll_id}/wait",
        response_model=PollInfo,
        dependencies=context.read,
        responses=responses(401, 403, 404, 422, 503),
        summary="Hold the request until the poll ends (or the timeout passes)",
    )
    async def wait_for_poll(
        poll_id: PathId,
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
        dependencies=context.write,
        responses=responses(401, 403, 404, 409, 422, 503),
        summary="Cancel a poll that has not ended",
    )
    async def cancel_poll(poll_id: PathId) -> PollInfo:
        return await poller.cancel_poll(poll_id)
