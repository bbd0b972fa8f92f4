"""Persisted background polling and scheduled jobs for FastAPI apps."""

from .config import JobPollerSettings as JobPollerSettings
from .events import Event as Event
from .events import EventType as EventType
from .exceptions import ConfigurationError as ConfigurationError
from .exceptions import ConflictError as ConflictError
from .exceptions import DatabaseUnavailableError as DatabaseUnavailableError
from .exceptions import FunctionNotFoundError as FunctionNotFoundError
from .exceptions import InvalidArgumentsError as InvalidArgumentsError
from .exceptions import InvalidStateError as InvalidStateError
from .exceptions import InvalidTriggerError as InvalidTriggerError
from .exceptions import JobAlreadyRanError as JobAlreadyRanError
from .exceptions import JobConflictError as JobConflictError
from .exceptions import JobNotFoundError as JobNotFoundError
from .exceptions import JobPollerError as JobPollerError
from .exceptions import NotRunningError as NotRunningError
from .exceptions import PayloadTooLargeError as PayloadTooLargeError
from .exceptions import PollConflictError as PollConflictError
from .exceptions import PollNotFoundError as PollNotFoundError
from .http import get_jobs_router as get_jobs_router
from .http import jobpoller_error_handler as jobpoller_error_handler
from .lifespan import mount_scheduler as mount_scheduler
from .models import CronTrigger as CronTrigger
from .models import DateTrigger as DateTrigger
from .models import Health as Health
from .models import IntervalTrigger as IntervalTrigger
from .models import JobInfo as JobInfo
from .models import JobRunInfo as JobRunInfo
from .models import JobRunState as JobRunState
from .models import PollAttemptInfo as PollAttemptInfo
from .models import PollInfo as PollInfo
from .models import PollOptions as PollOptions
from .models import PollState as PollState
from .models import QuarantinedRow as QuarantinedRow
from .models import WorkerInfo as WorkerInfo
from .outcomes import Done as Done
from .outcomes import Failed as Failed
from .outcomes import Pending as Pending
from .poller import JobPoller as JobPoller

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "CronTrigger",
    "DatabaseUnavailableError",
    "DateTrigger",
    "Done",
    "Event",
    "EventType",
    "Failed",
    "FunctionNotFoundError",
    "Health",
    "IntervalTrigger",
    "InvalidArgumentsError",
    "InvalidStateError",
    "InvalidTriggerError",
    "JobAlreadyRanError",
    "JobConflictError",
    "JobInfo",
    "JobNotFoundError",
    "JobPoller",
    "JobPollerError",
    "JobPollerSettings",
    "JobRunInfo",
    "JobRunState",
    "NotRunningError",
    "PayloadTooLargeError",
    "Pending",
    "PollAttemptInfo",
    "PollConflictError",
    "PollInfo",
    "PollNotFoundError",
    "PollOptions",
    "PollState",
    "QuarantinedRow",
    "WorkerInfo",
    "__version__",
    "get_jobs_router",
    "jobpoller_error_handler",
    "mount_scheduler",
]
