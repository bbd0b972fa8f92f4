"""The `jobpoller` command (and `python -m fastapi_jobpoller`): what it refuses, and how.

Running the engine with it is tested with real processes in tests/processes/test_workers.py.
"""

import subprocess
import sys

import pytest

from fastapi_jobpoller.cli import main
from tests.helpers import REPOSITORY


def jobpoller(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastapi_jobpoller", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPOSITORY,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.helpers:LOGGER", "is a str, not a JobPoller"),
        ("tests.helpers", "name the poller as module:attribute"),
        ("no_such_module_here:poller", "cannot import 'no_such_module_here'"),
        ("tests.helpers:no_such_name", "has no attribute 'no_such_name'"),
    ],
)
def test_the_worker_command_refuses_what_is_not_a_poller_with_exit_status_1(
    target: str, message: str
) -> None:
    result = jobpoller("worker", target)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("jobpoller: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_usage_mistake_exits_with_status_2_and_the_help_shows_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--help"])
    assert exited.value.code == 0
    assert "jobpoller worker myapp.jobs:poller" in capsys.readouterr().out
