"""Who may use the management API: secure by default.

Writes need an admin credential and reads a read (or admin) one. A credential is any
mechanism the host configured: the `api_key` / `read_api_key` settings (checked in
constant time from the API key header) and/or FastAPI dependencies given to the router.
Every configured mechanism must pass. With none configured, requests are refused, unless
`auth_disabled` is set for local development.

The key check runs twice on purpose: once before the request body is read (by the route
class of `_gate.py`, so an anonymous client cannot make the app read and parse a large
body), and once as a route dependency, where OpenAPI sees it.
"""

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi import Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader

from ..config import JobPollerSettings
from ..exceptions import JobPollerError

__all__ = ["AccessDeniedError", "AuthenticationError", "Gate", "access_dependency"]


class AuthenticationError(JobPollerError):
    """No valid credential was presented (HTTP 401)."""

    code = "not_authenticated"


class AccessDeniedError(JobPollerError):
    """The credential does not allow this route, or no auth is configured (HTTP 403)."""

    code = "forbidden"


def _matches(presented: str, expected: str) -> bool:
    return secrets.compare_digest(presented.encode(), expected.encode())


class Gate:
    """The key rules of one access level: what a request must present to pass."""

    def __init__(
        self,
        settings: JobPollerSettings,
        level: Literal["read", "write"],
        *,
        host_guarded: bool,
    ) -> None:
        self.settings = settings
        self.level = level
        self.host_guarded = host_guarded
        admin_key = settings.api_key.get_secret_value() if settings.api_key else None
        read_key = settings.read_api_key.get_secret_value() if settings.read_api_key else None
        self._read_key = read_key
        self._keys = [k for k in (admin_key, read_key if level == "read" else None) if k]

    def refusal(self, presented: str | None) -> JobPollerError | None:
        """Return why a request presenting this key is refused, or None to let it in.

        A host-guarded level without keys passes here: the host's dependencies decide.
        """
        if self.settings.auth_disabled:
            return None
        if self._keys:
            if presented is None:
                return AuthenticationError(
                    f"send an API key in the {self.settings.api_key_header} header"
                )
            if any(_matches(presented, key) for key in self._keys):
                return None
            if self.level == "write" and self._read_key and _matches(presented, self._read_key):
                return AccessDeniedError("this API key may only read")
            return AuthenticationError("the API key is not valid")
        if self.host_guarded:
            return None
        return AccessDeniedError(
            f"{self.level} access is refused because no auth is configured: set "
            "JOBPOLLER_API_KEY, or pass dependencies to the router"
        )

    def refusal_of(self, request: Request) -> JobPollerError | None:
        """Return why this request is refused, from its headers alone."""
        return self.refusal(request.headers.get(self.settings.api_key_header))


def access_dependency(
    settings: JobPollerSettings,
    level: Literal["read", "write"],
    *,
    host_dependencies: Sequence[DependsParam],
) -> Callable[..., Any]:
    """Build the dependency that guards one access level of the router.

    The dependency carries its `Gate` as `jobpoller_gate`: the route class finds it there
    and applies it before the body is read.
    """
    gate = Gate(settings, level, host_guarded=bool(host_dependencies))
    header = APIKeyHeader(
        name=settings.api_key_header,
        scheme_name="JobPollerApiKey",
        description="The api_key (admin) or read_api_key (read-only) setting.",
        auto_error=False,
    )

    async def check(request: Request, presented: str | None = Security(header)) -> None:
        # The host's own dependencies ran before this one and let the request in.
        refusal = gate.refusal(presented)
        if refusal is not None:
            raise refusal

    check.jobpoller_gate = gate  # type: ignore[attr-defined]
    return check
