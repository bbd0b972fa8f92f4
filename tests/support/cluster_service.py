"""The fake external service of tests/processes/test_cluster.py (a program, not a test).

Run it as `python tests/support/cluster_service.py [--max-delay SECONDS]`; it prints
`LISTENING <port>` and serves on 127.0.0.1 until killed:

- `POST /calls` with `{"kind": ..., "key": ..., "worker": ..., "pid": ...}` records one
  call (a poll attempt, a callback, a job tick), waits a random 0 to `--max-delay` seconds
  as a real service would (or `"delay"` seconds if the call says so), and answers
  `{"seq": n}`: how many calls of that kind and key it has seen, this one included;
- `GET /calls` answers every call recorded, each with the time it arrived and left.

It is the independent witness of the cluster test: it counts what the poll and job
functions really did, whatever the library's own tables say. A caller killed mid-call
still leaves its call here.
"""

import argparse
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Ledger:
    """Every call received, in order of arrival."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._counts: dict[tuple[str, str], int] = {}

    def record(self, call: dict[str, Any]) -> dict[str, Any]:
        """Append a call as it arrives; return the stored record."""
        with self._lock:
            key = (str(call["kind"]), str(call["key"]))
            seq = self._counts[key] = self._counts.get(key, 0) + 1
            record = {**call, "seq": seq, "arrived": time.time(), "left": None}
            self._calls.append(record)
        return record

    def leave(self, record: dict[str, Any]) -> None:
        """Note when the answer to a call went out."""
        with self._lock:
            record["left"] = time.time()

    def snapshot(self) -> list[dict[str, Any]]:
        """Return a copy of every call so far."""
        with self._lock:
            return [dict(call) for call in self._calls]


class Handler(BaseHTTPRequestHandler):
    """Answers the two routes; HTTP/1.1 so clients keep their connections."""

    protocol_version = "HTTP/1.1"
    ledger: Ledger

    def _answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # the caller was killed mid-call: its call stays recorded
            pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        call = json.loads(self.rfile.read(length))
        delay = call.pop("delay", None)
        record = self.ledger.record(call)
        time.sleep(random.uniform(0, self.ledger.max_delay) if delay is None else delay)
        self.ledger.leave(record)
        self._answer({"seq": record["seq"]})

    def do_GET(self) -> None:
        self._answer(self.ledger.snapshot())

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: thousands of calls would flood the test's logs."""


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-delay", type=float, default=0.05)
    options = parser.parse_args()
    Handler.ledger = Ledger(options.max_delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sys.stdout.write(f"LISTENING {server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
