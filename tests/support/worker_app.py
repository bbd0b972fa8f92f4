"""A module for `jobpoller worker tests.support.worker_app:poller` in the tests (a program's
module, not a test module): the poller and its functions are built when it is imported,
with every setting from `JOBPOLLER_*` variables, as in a real app's module.

The functions are those of `process_worker.py`, writing to the same ledger table
(`<table prefix>ledger`).
"""

from fastapi_jobpoller import JobPoller
from tests.support.process_worker import LEDGER_SUFFIX, Ledger, register_functions

__all__ = ["poller"]

poller = JobPoller()
_ledger = Ledger(
    poller.settings.database_url,
    poller.settings.table_prefix + LEDGER_SUFFIX,
    connections=poller.settings.thread_pool_size,
)
register_functions(poller, _ledger)
