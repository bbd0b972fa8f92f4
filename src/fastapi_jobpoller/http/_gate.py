"""What a request must pass before its body is read: the API key, and a size limit.

FastAPI reads and parses a route's body before it runs the route's dependencies, so a
key check that is only a dependency lets an anonymous client make the app read, hold and
parse a body of any size. The route class here checks the key from the headers first,
then refuses a body over `max_body_bytes`: at once when `Content-Length` says so, or as
soon as the bytes received pass it (a chunked body), without reading further.
"""

from fastapi import Request
from starlette.types import Message, Receive

from ._auth import Gate
from ._errors import Admission, BodyTooLargeError, ErrorMappingRoute

__all__ = ["GatedRoute"]


def _too_large(limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(
        f"the request body is larger than {limit:,} bytes (the max_body_bytes setting)"
    )


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None or not value.isdigit():
        return None  # absent or malformed: the server (or the count below) deals with it
    return int(value)


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return receive_within_limit


def _gate_of(route: ErrorMappingRoute) -> Gate | None:
    for dependency in route.dependencies:
        gate = getattr(dependency.dependency, "jobpoller_gate", None)
        if isinstance(gate, Gate):
            return gate
    return None


class GatedRoute(ErrorMappingRoute):
    """A management route: key checked and body size bounded before the body is read."""

    def admission(self) -> Admission:
        gate = _gate_of(self)
        if gate is None:  # /health: open to all, and without a body
            return super().admission()
        limit = gate.settings.max_body_bytes

        def admit(request: Request) -> Request:
            refusal = gate.refusal_of(request)
            if refusal is not None:
                raise refusal
            declared = _declared_length(request)
            if declared is not None and declared > limit:
                raise _too_large(limit)
            return Request(request.scope, _limited(request.receive, limit))

        return admit
