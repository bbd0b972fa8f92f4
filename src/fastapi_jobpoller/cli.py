"""The `jobpoller` command (also `python -m fastapi_jobpoller`).

`jobpoller worker myapp.jobs:poller` runs the engine of the `JobPoller` named
`poller` in the module `myapp.jobs`, without HTTP, until SIGTERM or Ctrl-C; then it
stops claiming, lets the work in flight finish for `shutdown_grace_seconds` and hands
every lease back. Settings come from the same `JOBPOLLER_*` variables as the app's, except
that the engine always runs here: `JOBPOLLER_RUN_ENGINE=false`, meant for the web
processes, is overridden.
"""

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .exceptions import ConfigurationError
from .poller import JobPoller

__all__ = ["main"]

logger = logging.getLogger(__name__)

_WORKER_EXAMPLE = """example:
  JOBPOLLER_DATABASE_URL=postgresql+psycopg://app@db/app jobpoller worker myapp.jobs:poller
"""


def load_poller(target: str) -> JobPoller:
    """Import `module:attribute` (from the current directory too) and return the poller.

    Raises:
        ConfigurationError: The target is malformed, cannot be imported, or is no poller.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"name the poller as module:attribute, e.g. myapp.jobs:poller (got {target!r})"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"cannot import {module_name!r}: {error}") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, JobPoller):
        raise ConfigurationError(
            f"{target} is a {type(found).__name__}, not a JobPoller: name the poller "
            "itself (the object mount_scheduler is given)"
        )
    if not found.settings.run_engine:
        raise ConfigurationError(
            f"{target} is built with run_engine=False in code; the worker runs the engine"
        )
    return found


async def run_worker(poller: JobPoller) -> None:
    """Run `poller`'s engine until SIGTERM or SIGINT, then shut it down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    poller._engine_role = "worker"
    async with poller:
        logger.info(
            "worker %r runs poll functions %s and job functions %s",
            poller.worker_id,
            poller.function_names("poll"),
            poller.function_names("job"),
            extra={"event": "worker_started"},
        )
        await stop.wait()
        logger.info("stopping: work in flight finishes, leases are handed back")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobpoller", description="Operate fastapi-jobpoller from the command line."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker",
        help="run a poller's engine alone, without HTTP",
        description="Run the engine of a JobPoller without HTTP, until SIGTERM or Ctrl-C.",
        epilog=_WORKER_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("poller", help="the poller to run, as module:attribute")
    worker.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the log lines written to stderr (default: INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 refused, 2 usage)."""
    options = _parser().parse_args(argv)
    logging.basicConfig(
        level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ["JOBPOLLER_RUN_ENGINE"] = "true"  # before the app's module builds its poller
    try:
        poller = load_poller(options.poller)
        asyncio.run(run_worker(poller))
    except ConfigurationError as error:
        sys.stderr.write(f"jobpoller: {error}\n")
        return 1
    return 0
