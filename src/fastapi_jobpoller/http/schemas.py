"""Request and response bodies of the management API."""

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .._storage.tables import ID_LENGTH
from ..models import PollOptions, Trigger

__all__ = [
    "ErrorResponse",
    "FunctionsResponse",
    "JobCreate",
    "JobUpdate",
    "Page",
    "PollCreate",
]

Item = TypeVar("Item")
# An id is one segment of this API's paths, so it never holds a "/".
_ID_PATTERN = r"^[^/]*$"


class ErrorResponse(BaseModel):
    """Every error answer: a stable machine-readable `code` and a human `detail`."""

    code: str = Field(examples=["poll_not_found"])
    detail: str = Field(examples=["no poll has id 'abc'"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Field-level problems, for validation errors."
    )


class Page(BaseModel, Generic[Item]):
    """One page of a list; ask again with `offset=next_offset` while it is set."""

    items: list[Item]
    limit: int
    offset: int
    next_offset: int | None = Field(
        description="Offset of the next page, or null on the last page."
    )


class PollCreate(PollOptions):
    """Start a poll of a registered poll function."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str = Field(min_length=1, max_length=ID_LENGTH, description="Registered name.")
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=ID_LENGTH,
        pattern=_ID_PATTERN,
        description="Idempotency key: the same id and definition returns the stored poll.",
    )


class JobCreate(BaseModel):
    """Schedule a registered job function."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(min_length=1, max_length=ID_LENGTH, description="Registered name.")
    trigger: Trigger
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, min_length=1, max_length=ID_LENGTH, pattern=_ID_PATTERN)
    replace_existing: bool = False
    paused: bool = False
    misfire_grace_time: float | None = Field(default=None, ge=0, le=366 * 86_400)
    coalesce: bool | None = None
    max_instances: int | None = Field(default=None, ge=1, le=1000)


class JobUpdate(BaseModel):
    """Change some of a job; a new trigger restarts its schedule from now."""

    model_config = ConfigDict(extra="forbid")

    trigger: Trigger | None = None
    arguments: dict[str, Any] | None = None
    misfire_grace_time: float | None = Field(default=None, ge=0, le=366 * 86_400)
    coalesce: bool | None = None
    max_instances: int | None = Field(default=None, ge=1, le=1000)


class FunctionsResponse(BaseModel):
    """The registered names a request may use."""

    poll_functions: list[str]
    job_functions: list[str]
    callbacks: list[str]
