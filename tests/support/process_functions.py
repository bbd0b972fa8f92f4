"""Module-level poll functions for `executor="process"` tests.

A process pool imports a function by its module and name in a spawned child, so these
must live in an importable module, not inside a test.
"""

import os

from fastapi_jobpoller import Done


def report_pid(label: str) -> Done:
    """Finish at once, reporting which process ran the attempt."""
    return Done(result={"pid": os.getpid(), "label": label})


class Checks:
    """Holds a static method, to show a dotted qualified name resolves too."""

    @staticmethod
    def report_parent_pid() -> Done:
        return Done(result=os.getppid())
