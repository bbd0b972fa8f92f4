"""The management API behind API keys: one that may change everything, one that may read.

    export JOBPOLLER_API_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    export JOBPOLLER_READ_API_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    python examples/api_key_auth.py

Clients send a key in the `X-API-Key` header (`JOBPOLLER_API_KEY_HEADER` names another).
The admin key may use every route; the read key only the routes that change nothing,
for a dashboard, say. Without any key configured the API refuses everyone but
`/health`: it is secure by default.
"""

import uvicorn
from fastapi import FastAPI

from fastapi_jobpoller import JobPoller, mount_scheduler

# The keys are settings, read from the environment here: never write them in code.
poller = JobPoller()


@poller.job_function()
def rebuild_search_index(full: bool = False) -> str:
    return "full rebuild" if full else "incremental rebuild"


app = FastAPI(title="Search")
# The host app chooses where the API lives and how it is tagged in /docs.
mount_scheduler(app, poller, prefix="/admin/scheduler", tags=["scheduler"])


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
