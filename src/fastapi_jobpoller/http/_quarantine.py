"""The route listing rows that need attention: polls and jobs the engine set aside."""

# No `from __future__ import annotations`: FastAPI must see the real annotations.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ..models import QuarantinedRow
from ._params import Offset, RouteContext, page, responses
from .schemas import Page

__all__ = ["add_quarantine_routes"]


def add_quarantine_routes(router: APIRouter, context: RouteContext) -> None:
    """Add `/quarantine` to `router`."""
    poller, settings = context.poller, context.poller.settings
    Limit = Annotated[int, Query(ge=1, le=settings.max_page_size, description="Page size.")]

    @router.get(
        "/quarantine",
        response_model=Page[QuarantinedRow],
        dependencies=context.read,
        responses=responses(401, 403, 422, 503),
        summary="List polls and jobs set aside because their stored rows cannot be used",
    )
    async def list_quarantined(
        kind: Annotated[Literal["poll", "job"] | None, Query()] = None,
        limit: Limit = context.default_limit,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        items = await poller.list_quarantined(kind=kind, limit=limit, offset=offset)
        return page(items, limit, offset)
