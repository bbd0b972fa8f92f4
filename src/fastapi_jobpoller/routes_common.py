"""What the route modules share: who may call, error declarations, pages."""

from dataclasses import dataclass
from typing import Any

from fastapi.params import Depends as DependsParam

from .api_models import ErrorResponse
from .poller import JobPoller

__all__ = ["NO_NUL", "RouteContext", "page", "responses"]

# Ids and names never hold a NUL character (PostgreSQL cannot store one in text).
NO_NUL = r"^[^\x00]*$"

_DESCRIPTIONS = {
    401: "No valid API key",
    403: "Not allowed, or no auth configured",
    404: "Unknown id",
    409: "Conflicting id or state",
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
