"""examples/seed_integration.py runs end to end, in-process and as a script."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx2
import pytest
from fastapi.testclient import TestClient

from tests.helpers import free_port
from tests.support.examples_support import EXAMPLES, load_example

EXAMPLE = EXAMPLES / "seed_integration.py"
API_KEY = "example-tests-admin-key-00001"
ADMIN = {"X-API-Key": API_KEY}


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBPOLLER_API_KEY", API_KEY)
    monkeypatch.setenv("JOBPOLLER_DEFAULT_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("JOBPOLLER_IDLE_WAIT_SECONDS", "0.05")
    return load_example("seed_integration")


def test_a_submitted_transfer_is_polled_until_it_completes(
    example: ModuleType, tmp_path: Path
) -> None:
    with TestClient(example.app) as client:
        submitted = client.post("/submit", json={"data": {"file": "a.csv"}, "size_mb": 300})
        assert submitted.status_code == 201
        request_id = submitted.json()["request_id"]
        waited = client.get(
            f"/jobpoller/polls/{request_id}/wait", params={"timeout": 30}, headers=ADMIN
        )
        assert waited.status_code == 200
        poll = waited.json()
        assert poll["state"] == "succeeded"
        assert poll["attempts"] == 3
        assert poll["callbacks"] == ["announce"]
        assert poll["callbacks_pending"] is False
        listed = client.get("/transfers").json()
        assert listed == [{"request_id": request_id, "state": "succeeded", "checks": 3}]
    # The default database is a file in the working directory.
    assert (tmp_path / "jobpoller.db").is_file()


def test_a_transfer_can_be_cancelled_while_another_completes(example: ModuleType) -> None:
    with TestClient(example.app) as client:
        quick = client.post("/submit", json={"data": {}, "size_mb": 100}).json()["request_id"]
        huge = client.post("/submit", json={"data": {}, "size_mb": 10**9}).json()["request_id"]
        cancelled = client.delete(f"/transfers/{huge}")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        assert client.delete(f"/transfers/{huge}").status_code == 409
        assert client.delete("/transfers/unknown").status_code == 404
        done = client.get(f"/jobpoller/polls/{quick}/wait", params={"timeout": 30}, headers=ADMIN)
        assert done.json()["state"] == "succeeded"
        states = {t["request_id"]: t["state"] for t in client.get("/transfers").json()}
        assert states == {quick: "succeeded", huge: "cancelled"}


def test_the_management_api_needs_the_api_key_from_the_settings(example: ModuleType) -> None:
    with TestClient(example.app) as client:
        assert client.get("/jobpoller/polls").status_code == 401
        assert client.get("/jobpoller/polls", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/jobpoller/polls", headers=ADMIN).status_code == 200
        assert client.get("/jobpoller/health").json()["status"] == "ok"


@pytest.mark.processes
def test_running_the_script_serves_the_app_with_uvicorn_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    environment = {
        **os.environ,
        "PORT": str(port),
        "JOBPOLLER_API_KEY": API_KEY,
        "JOBPOLLER_DEFAULT_POLL_INTERVAL": "0.05",
    }
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout and process.stdout.read()
            try:
                health = httpx2.get(f"{base_url}/jobpoller/health")
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the example did not start serving"
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        submitted = httpx2.post(f"{base_url}/submit", json={"data": {}})
        request_id = submitted.json()["request_id"]
        waited = httpx2.get(
            f"{base_url}/jobpoller/polls/{request_id}/wait",
            params={"timeout": 20},
            headers=ADMIN,
            timeout=30,
        )
        assert waited.json()["state"] == "succeeded"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert (tmp_path / "jobpoller.db").is_file()
    assert f"transfer request {request_id} ended: succeeded".encode() in output
