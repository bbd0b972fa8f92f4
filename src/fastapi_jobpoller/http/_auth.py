"""Who may use the management API: secure by default.

Writes need an admin credential and reads a read (or admin) one. A credential is any
mechanism the host configured: the `api_key` / `read_api_key` settings (checked in
constant time from the API key header) and/or FastAPI dependencies given to the router.
Every configured mechanism must pass. With none configured, requests are refused, unless
`auth_disabled` is set for local development.
"""

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi import Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader

from ..config import JobPollerSettings
from ..exceptions import JobPollerError

__all__ = ["AccessDeniedError", "AuthenticationError", "access_dependency"]


class AuthenticationError(JobPollerError):
    """No valid credential was presented (HTTP 401)."""

    code = "not_authenticated"


class AccessDeniedError(JobPollerError):
    """The credential does not allow this route, or no auth is configured (HTTP 403)."""

    code = "forbidden"


def _matches(presented: str, expected: str) -> bool:
    return secrets.compare_digest(presented.encode(), expected.encode())


def access_dependency(
    settings: JobPollerSettings,
    level: Literal["read", "write"],
    *,
    host_dependencies: Sequence[DependsParam],
) -> Callable[..., Any]:
    """Build the dependency that guards one access level of the router."""
    admin_key = settings.api_key.get_secret_value() if settings.api_key else None
    read_key = settings.read_api_key.get_secret_value() if settings.read_api_key else None
    keys = [k for k in (admin_key, read_key if level == "read" else None) if k]
    key_configured = bool(admin_key or (read_key if level == "read" else None))
    header = APIKeyHeader(
        name=settings.api_key_header,
        scheme_name="JobPollerApiKey",
        description="The api_key (admin) or read_api_key (read-only) setting.",
        auto_error=False,
    )

    async def check(request: Request, presented: str | None = Security(header)) -> None:
        if settings.auth_disabled:
            return
        if key_configured:
            if presented is None:
                raise AuthenticationError(
                    f"send an API key in the {settings.api_key_header} header"
                )
            if not any(_matches(presented, key) for key in keys):
                if level == "write" and read_key and _matches(presented, read_key):
                    raise AccessDeniedError("this API key may only read")
                raise AuthenticationError("the API key is not valid")
            return
        if host_dependencies:
            # The host's own dependencies ran before this one and let the request in.
            return
        raise AccessDeniedError(
            f"{level} access is refused because no auth is configured: set "
            "JOBPOLLER_API_KEY, or pass dependencies to the router"
        )

    return check
