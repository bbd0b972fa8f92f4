"""The management API behind the app's own auth: its users and their roles decide.

    python examples/host_auth.py
    curl -H "Authorization: Bearer viewer-token" localhost:8000/jobpoller/jobs

Every management route but `/health` runs the app's `current_user` dependency, and the
routes that change something also run `require_operator`. Once dependencies protect the
API, no API key is needed (if one is set too, both must pass).
"""

from dataclasses import dataclass
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fastapi_jobpoller import JobPoller, mount_scheduler


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]


# Stands in for the app's own sign-in: a session store, an OAuth token check, ...
USERS_BY_TOKEN = {
    "operator-token": User("olga", frozenset({"operator"})),
    "viewer-token": User("victor", frozenset({"viewer"})),
}
bearer = HTTPBearer(auto_error=False)


async def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> User:
    user = USERS_BY_TOKEN.get(credentials.credentials) if credentials else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="sign in first",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


async def require_operator(user: Annotated[User, Depends(current_user)]) -> User:
    if "operator" not in user.roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="operators only")
    return user


poller = JobPoller()  # reads the JOBPOLLER_* settings now


@poller.job_function()
def send_newsletter(edition: str) -> str:
    return f"newsletter {edition} sent"


app = FastAPI(title="Newsletters")
mount_scheduler(
    app,
    poller,
    dependencies=[Depends(current_user)],  # reading: any signed-in user
    write_dependencies=[Depends(require_operator)],  # changing: operators only
)


@app.get("/me")
async def me(user: Annotated[User, Depends(current_user)]) -> dict[str, object]:
    # The app's own routes use the same dependencies as ever.
    return {"name": user.name, "roles": sorted(user.roles)}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
