"""Processes for tests/processes/test_cluster.py: a PostgreSQL server of the test's own, the fake
external service, and uvicorn app instances. Every wait is bounded; every process is
ended by the fixture that started it.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
import sqlalchemy as sa

from tests.helpers import REPOSITORY, STOP_TIMEOUT, free_port, wait_until

SERVICE_SCRIPT = Path(__file__).with_name("cluster_service.py")
APP = "tests.support.cluster_app:app"
API_KEY = "cluster-test-admin-key-0001"
HEADERS = {"X-API-Key": API_KEY}
# Bound of the PostgreSQL commands (initdb, pg_ctl); no test asserts speed with it.
COMMAND_TIMEOUT = 60.0


def utc(timestamp: float) -> datetime:
    """Return a `time.time()` value as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp, UTC)


def pid_alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie (works for others' children)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    """Return the live child processes of `pid`."""
    found = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(Path(stat_path).parent.name))
    return found


# -- PostgreSQL ----------------------------------------------------------------------


def postgresql_bin() -> Path | None:
    """Return the newest PostgreSQL server's bin directory, or None if none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: p.split("/"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a free port, run as `postgres`.

    PostgreSQL refuses to run as root: as root, its commands run through `runuser` as the
    `postgres` user, in a temporary directory that user owns.
    """

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="jobpoller-pg-"))
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.base, user="postgres", group="postgres")
        self.data = self.base / "data"
        self.running = False
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def _run(self, program: str, *arguments: str) -> None:
        command = [*self._as_postgres, str(self._bin / program), *arguments]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
        if result.returncode != 0:
            output = f"{result.stdout}{result.stderr}\n{self.log()}"
            pytest.fail(f"{program} failed ({result.returncode}):\n{output}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = " ".join(
            f"-c {setting}"
            for setting in (
                "listen_addresses=127.0.0.1",
                f"port={self.port}",
                f"unix_socket_directories={self.base}",
                "max_connections=200",
                "timezone=UTC",
                # A test database: durability is not the point, speed on 2 cores is.
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            )
        )
        log = str(self.base / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start"
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: clients are disconnected, work in progress rolled back)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database: str) -> str:
        """Return the SQLAlchemy URL of one database of this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def log(self) -> str:
        """Return the end of the server's log, for failure messages."""
        path = self.base / "server.log"
        lines = path.read_text().splitlines()[-30:] if path.exists() else []
        return "--- PostgreSQL log ---\n" + "\n".join(lines)

    def destroy(self) -> None:
        """Stop the server at once if it runs and delete its files."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started PostgreSQL server of our own; skipped (failed in CI) without binaries."""
    bin_dir = postgresql_bin()
    if bin_dir is None:
        if os.environ.get("JOBPOLLER_TEST_REQUIRE_DATABASES"):
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        pytest.skip("needs PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# -- the fake external service ---------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One call the service received."""

    kind: str
    key: str
    worker: str
    pid: int
    seq: int
    arrived: datetime
    left: datetime | None


class Service:
    """tests/support/cluster_service.py, started on a free port."""

    def __init__(self, log_path: Path, *, max_delay: float) -> None:
        self._log: IO[str] = log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, str(SERVICE_SCRIPT), "--max-delay", str(max_delay)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()  # the service answers at once
        if line[:1] != ["LISTENING"]:
            self.close()
            pytest.fail(f"the service did not start: {line}")
        self.url = f"http://127.0.0.1:{line[1]}"

    def calls(self, kind: str | None = None) -> list[Call]:
        """Return the calls received so far (of one kind), in order of arrival."""
        response = httpx2.get(f"{self.url}/calls", timeout=30.0)
        response.raise_for_status()
        return [
            Call(
                kind=c["kind"],
                key=c["key"],
                worker=c["worker"],
                pid=c["pid"],
                seq=c["seq"],
                arrived=utc(c["arrived"]),
                left=None if c["left"] is None else utc(c["left"]),
            )
            for c in response.json()
            if kind is None or c["kind"] == kind
        ]

    def close(self) -> None:
        """Kill the service."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


# -- app instances ---------------------------------------------------------------------


def app_environment(settings: dict[str, object], service_url: str) -> dict[str, str]:
    """Return the environment of an app process: ours minus JOBPOLLER_*, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPOLLER_")}
    env.update({f"JOBPOLLER_{k.upper()}": str(v) for k, v in settings.items()})
    env["JOBPOLLER_API_KEY"] = API_KEY
    env["CLUSTER_SERVICE_URL"] = service_url
    env["PYTHONPATH"] = str(REPOSITORY)
    return env


class AppInstance:
    """`python -m uvicorn tests.support.cluster_app:app --workers N` on its own port.

    With `workers > 1` uvicorn runs a supervisor that starts (and restarts) worker
    processes; with 1 the uvicorn process is the worker itself.
    """

    def __init__(self, name: str, *, workers: int, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.workers = workers
        self.port = free_port()
        self.log_path = log_path
        self._log: IO[str] = log_path.open("a")
        command = [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", str(workers), "--log-level", "warning"]
        self.process = subprocess.Popen(
            command,
            cwd=REPOSITORY,
            env=env,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # its own process group: nothing outlives the test
        )
        # A new connection per request: a kept-alive one could lead to a worker killed
        # since, while a new one is accepted by a live worker.
        self.client = httpx2.Client(
            base_url=f"http://127.0.0.1:{self.port}/jobpoller",
            headers=HEADERS,
            timeout=30.0,
            limits=httpx2.Limits(max_keepalive_connections=0),
        )

    def started(self) -> dict[int, str]:
        """Return the worker id of every process that said it started, by pid."""
        found = {}
        for line in self.log_path.read_text().splitlines():
            if line.startswith("CLUSTER-APP STARTED "):
                _, _, pid, worker_id = line.split()
                found[int(pid)] = worker_id
        return found

    def worker_pids(self) -> list[int]:
        """Return the pids of the live worker processes that have started their poller."""
        started = self.started()
        if self.workers == 1:
            return [self.process.pid] if self.process.poll() is None else []
        return sorted(pid for pid in children(self.process.pid) if pid in started)

    def check_alive(self) -> None:
        """Fail at once if the uvicorn process ended."""
        if self.process.poll() is not None:
            pytest.fail(f"app {self.name} exited ({self.process.returncode})\n{self.log()}")

    def wait_workers(self, *, timeout: float) -> list[int]:
        """Wait until `workers` processes run and have started their poller."""
        give_up_at = time.monotonic() + timeout
        while True:
            self.check_alive()
            pids = self.worker_pids()
            if len(pids) == self.workers:
                return pids
            if time.monotonic() > give_up_at:
                pytest.fail(f"app {self.name}: workers {pids} after {timeout} s\n{self.log()}")
            time.sleep(0.05)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """Send one request to the instance (through whichever worker accepts it)."""
        return self.client.request(method, path, **kwargs)

    def log(self) -> str:
        """Return the end of the instance's log, for failure messages."""
        self._log.flush()
        lines = self.log_path.read_text().splitlines()[-60:]
        return f"--- log of app {self.name} ---\n" + "\n".join(lines)

    def log_lines(self, *needles: str) -> list[str]:
        """Return the log lines that contain any of `needles`."""
        self._log.flush()
        return [
            line
            for line in self.log_path.read_text().splitlines()
            if any(needle in line for needle in needles)
        ]

    def stop(self) -> None:
        """Stop with SIGTERM as a process manager would; check every worker shut down.

        A lone uvicorn process re-raises the SIGTERM it handled once it has shut down, so
        it ends "killed by SIGTERM"; a supervisor ends with status 0. Either way each
        worker must have said it stopped.
        """
        workers = self.worker_pids()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"app {self.name} ignored SIGTERM for {STOP_TIMEOUT} s\n{self.log()}")
        assert status in (0, -signal.SIGTERM), f"exit status {status}\n{self.log()}"
        stopped = {int(line.split()[2]) for line in self.log_lines("CLUSTER-APP STOPPED ")}
        assert set(workers) <= stopped, f"not all of {workers} stopped\n{self.log()}"

    def close(self) -> None:
        """Kill whatever of the instance still runs; release its client and log."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=STOP_TIMEOUT)
        self.client.close()
        self._log.close()


def sigkill(pid: int) -> None:
    """SIGKILL a process and wait until it is gone (its parent may reap it later)."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=STOP_TIMEOUT, what=f"pid {pid} gone")


def error_body(response: httpx2.Response) -> dict[str, Any]:
    """Return a response's JSON body, or a description of what came instead."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        return {"unparsed": response.text}
    return body if isinstance(body, dict) else {"unparsed": body}
