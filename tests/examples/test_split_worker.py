"""examples/split_worker.py runs as docs/running-several-workers.md says: a web app with
`JOBPOLLER_RUN_ENGINE=false` submits, and a `jobpoller worker` process runs the work.

The worker is a real process started with the command the docs give; the web app runs in
this process (a client), on the same SQLite file.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import REPOSITORY, STOP_TIMEOUT
from tests.support.examples_support import (
    ADMIN,
    eventually,
    load_example,
    set_example_environment,
)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`jobpoller worker examples.split_worker:poller` on a SQLite file of the test's own."""
    url = f"sqlite:///{tmp_path}/split.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOLLER_")}
    env.update(JOBPOLLER_DATABASE_URL=url, JOBPOLLER_IDLE_WAIT_SECONDS="0.05")
    env["JOBPOLLER_RUN_ENGINE"] = "false"  # as the web processes' environment says
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "fastapi_jobpoller", "worker", "examples.split_worker:poller"],
        cwd=REPOSITORY,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        log.close()


def test_the_web_app_submits_and_the_worker_process_runs_the_poll(
    worker: tuple[subprocess.Popen[str], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    process, url = worker
    set_example_environment(monkeypatch, url, "jobpoller_", run_engine="false")
    web = load_example("split_worker")
    assert web.poller.function_names("poll") == []  # the web process has no code to run

    with TestClient(web.app) as client:

        def worker_registered() -> bool | None:
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            listed = client.get("/jobpoller/workers", headers=ADMIN).json()
            roles = sorted(w["role"] for w in listed if w["alive"])
            return True if roles == ["client", "worker"] else None

        eventually(worker_registered, what="the worker in the registry")
        started = client.post("/renders")
        assert started.status_code == 202, started.text
        poll_id = started.json()["poll_id"]

        def ended() -> dict[str, object] | None:
            status: dict[str, object] = client.get(f"/renders/{poll_id}").json()
            return status if status["state"] == "succeeded" else None

        status = eventually(ended, what="the render poll to succeed")
        assert status["result"] == {"render_id": poll_id, "worker_pid": process.pid}
        health = client.get("/jobpoller/health").json()
        assert (health["role"], health["status"], health["engine_alive"]) == (
            "client",
            "ok",
            False,
        )

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT) == 0
    assert " ERROR " not in (tmp_path / "worker.log").read_text()
