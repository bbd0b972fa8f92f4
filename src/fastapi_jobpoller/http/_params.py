"""What the route modules share: who may call, error declarations, pages."""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.params import Depends as DependsParam

from .._storage.tables import ID_LENGTH
from ..poller import JobPoller
from .schemas import ErrorResponse

__all__ = ["NO_NUL", "NameQuery", "Offset", "PathId", "RouteContext", "page", "responses"]

# Ids and names never hold a NUL character (PostgreSQL cannot store one in text).
NO_NUL = r"^[^\x00]*$"
# Deeper than any real listing goes; a bound keeps OFFSET cheap for the database.
_MAX_OFFSET = 10_000_000

PathId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, pattern=NO_NUL)]
"""A poll, job or run id in the path."""
NameQuery = Annotated[str | None, Query(max_length=ID_LENGTH, pattern=NO_NUL)]
"""An optional id or function name to filter by."""
Offset = Annotated[int, Query(ge=0, le=_MAX_OFFSET, description="Items to skip.")]
"""How many items a page skips."""

_DESCRIPTIONS = {
    401: "No valid API key",
    403: "Not allowed, or no auth configured",
    404: "Unknown id",
    409: "Conflicting id or state",
    413: "Request body larger than the max_body_bytes setting",
    422: "Invalid request, function, trigger or arguments",
    503: "Database unavailable or engine not running",
}


@dataclass(frozen=True, slots=True)
class RouteContext:
    """The poller and the dependencies that guard reads and writes."""

    poller: JobPoller
    read: list[DependsParam]
    write: list[DependsParam]

    @property
    def default_limit(self) -> int:
        """Return the page size used when a request names none."""
        return min(100, self.poller.settings.max_page_size)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Declare error responses in OpenAPI, each with the `ErrorResponse` body."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


def page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """Return a `Page` body; a full page has a `next_offset`."""
    return {
        "items": items,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(items) == limit else None,
    }
