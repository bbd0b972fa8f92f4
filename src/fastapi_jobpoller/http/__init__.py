"""The HTTP layer: the management router, its auth, schemas and error mapping.

`get_jobs_router` and `jobpoller_error_handler` are also exported at the top level;
`schemas` holds the request and response bodies a client may want to reuse.
"""

from ._errors import jobpoller_error_handler as jobpoller_error_handler
from ._router import get_jobs_router as get_jobs_router

__all__ = ["get_jobs_router", "jobpoller_error_handler"]
