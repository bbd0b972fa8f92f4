"""Error mapping, here and only here: our exceptions and request validation errors become
JSON `ErrorResponse` bodies with a stable `code` (and the HTTP status below).
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..exceptions import (
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
from ._auth import AccessDeniedError, AuthenticationError
from .schemas import ErrorResponse

__all__ = ["Admission", "ErrorMappingRoute", "BodyTooLargeError", "jobpoller_error_handler"]


class BodyTooLargeError(JobPollerError):
    """The request body is larger than the `max_body_bytes` setting (HTTP 413)."""

    code = "body_too_large"


_STATUS_BY_ERROR: tuple[tuple[type[JobPollerError], int], ...] = (
    (AuthenticationError, status.HTTP_401_UNAUTHORIZED),
    (AccessDeniedError, status.HTTP_403_FORBIDDEN),
    (BodyTooLargeError, 413),
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


async def jobpoller_error_handler(request: Request, exc: Exception) -> Response:
    """Answer our errors in the host's own routes as our routes do.

    `app.add_exception_handler(JobPollerError, jobpoller_error_handler)` turns, e.g., a
    `PollNotFoundError` raised in your endpoint into a 404 `ErrorResponse`.
    """
    if not isinstance(exc, JobPollerError):
        raise exc
    details: list[dict[str, Any]] | None = getattr(exc, "errors", None) or None
    return _error_response(_status_of(exc), exc.code, str(exc), details)


Admission = Callable[[Request], Request]


def _admit_all(request: Request) -> Request:
    return request


class ErrorMappingRoute(APIRoute):
    """A route that answers our errors and validation errors as `ErrorResponse`."""

    def admission(self) -> Admission:
        """Return the check run before the body is read (it may refuse or wrap the request)."""
        return _admit_all

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        admit = self.admission()

        async def handle(request: Request) -> Response:
            try:
                return await handler(admit(request))
            except RequestValidationError as exc:
                errors = [
                    {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
                    for e in exc.errors()
                ]
                summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
                return _error_response(
                    422,
                    "validation_error",
                    summary or "invalid request",
                    jsonable_encoder(errors),
                )
            except JobPollerError as exc:
                return await jobpoller_error_handler(request, exc)
            except HTTPException as exc:
                # FastAPI answers a body that is not even text (bad UTF-8) or nests too
                # deep for the JSON parser with a bare, undeclared 400; answer it like any
                # other undecodable JSON body. The host's own HTTPExceptions pass through.
                if isinstance(exc.__cause__, JobPollerError):
                    # Raised while the body was read (its size limit): FastAPI wrapped it.
                    return await jobpoller_error_handler(request, exc.__cause__)
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
