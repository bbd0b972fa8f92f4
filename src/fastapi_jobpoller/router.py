"""Where 0.1.0 defined the router factory; kept so that its import paths keep working.

The HTTP layer lives in the `http` package now.
"""

from .http import get_jobs_router as get_jobs_router
from .http import jobpoller_error_handler as jobpoller_error_handler

__all__ = ["get_jobs_router", "jobpoller_error_handler"]
