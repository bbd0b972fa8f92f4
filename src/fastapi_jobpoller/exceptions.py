"""Every error the library raises on purpose.

    JobPollerError
    ├── ConfigurationError (ValueError)        a function or setting cannot be used as given
    ├── FunctionNotFoundError (LookupError)    no function is registered under that name
    ├── InvalidArgumentsError (ValueError)     arguments fail the function's signature
    │   └── PayloadTooLargeError               arguments larger than allowed
    ├── InvalidTriggerError (ValueError)       a trigger definition is invalid
    ├── PollNotFoundError (LookupError)        no poll has that id
    ├── JobNotFoundError (LookupError)         no scheduled job has that id
    ├── ConflictError                          an id is taken by something different
    │   ├── PollConflictError
    │   └── JobConflictError
    │       └── JobAlreadyRanError             a date job's only tick already ran
    ├── InvalidStateError                      the operation does not fit the current state
    ├── NotRunningError (RuntimeError)         the poller is not started
    └── DatabaseUnavailableError               the database cannot be reached

Each error has a stable machine-readable `code`, which the HTTP layer puts in responses.
"""

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "FunctionNotFoundError",
    "InvalidArgumentsError",
    "InvalidStateError",
    "InvalidTriggerError",
    "JobAlreadyRanError",
    "JobConflictError",
    "JobNotFoundError",
    "JobPollerError",
    "NotRunningError",
    "PayloadTooLargeError",
    "PollConflictError",
    "PollNotFoundError",
]


class JobPollerError(Exception):
    """Root of every error fastapi-jobpoller raises on purpose."""

    code = "jobpoller_error"


class ConfigurationError(JobPollerError, ValueError):
    """A function, callback or setting cannot be used as given."""

    code = "configuration_error"


class FunctionNotFoundError(JobPollerError, LookupError):
    """No function of the wanted kind is registered under that name."""

    code = "function_not_found"


class InvalidArgumentsError(JobPollerError, ValueError):
    """Arguments do not fit the registered function's signature, or are not JSON."""

    code = "invalid_arguments"

    def __init__(self, message: str, *, errors: list[dict[str, object]] | None = None):
        super().__init__(message)
        self.errors = errors or []


class PayloadTooLargeError(InvalidArgumentsError):
    """The JSON arguments are larger than `max_arguments_bytes`."""

    code = "payload_too_large"


class InvalidTriggerError(JobPollerError, ValueError):
    """A trigger definition is invalid (bad cron field, unknown time zone, ...)."""

    code = "invalid_trigger"


class PollNotFoundError(JobPollerError, LookupError):
    """No poll has that id."""

    code = "poll_not_found"


class JobNotFoundError(JobPollerError, LookupError):
    """No scheduled job has that id."""

    code = "job_not_found"


class ConflictError(JobPollerError):
    """An id is already used by something with a different definition."""

    code = "conflict"


class PollConflictError(ConflictError):
    """A poll with that id exists with another function or other arguments."""

    code = "poll_conflict"


class JobConflictError(ConflictError):
    """A scheduled job with that id exists already."""

    code = "job_conflict"


class JobAlreadyRanError(JobConflictError):
    """A date job with that id already ran at that run date: its tick cannot run twice."""

    code = "job_already_ran"


class InvalidStateError(JobPollerError):
    """The operation does not fit the current state (e.g. cancelling a finished poll)."""

    code = "invalid_state"


class NotRunningError(JobPollerError, RuntimeError):
    """The poller must be started (or `async with poller:` entered) first."""

    code = "not_running"


class DatabaseUnavailableError(JobPollerError):
    """The database could not be reached; the operation may be retried.

    The message is safe to show to an HTTP client. `reason` is the driver's own account
    (with any password masked), for logs: it may name the server's address. `permanent`
    is true when retrying cannot help (an unknown database or user, a refused password).
    """

    code = "database_unavailable"

    def __init__(self, message: str, *, reason: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.permanent = permanent
