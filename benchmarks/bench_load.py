"""HTTP load for the submit API, from its own process, over loopback only.

`python bench_load.py PORT CONCURRENCY MAX_REQUESTS MAX_SECONDS` sends `POST /submit`
from CONCURRENCY threads, each with one keep-alive connection, until MAX_REQUESTS were
sent or MAX_SECONDS passed, and prints one JSON line: the latencies and errors.
"""

import http.client
import itertools
import json
import sys
import threading
import time

_BODY = json.dumps({"data": {"source": "benchmark"}}).encode()
_HEADERS = {"Content-Type": "application/json"}


def main() -> None:
    port, concurrency, max_requests = (int(value) for value in sys.argv[1:4])
    max_seconds = float(sys.argv[4])
    tickets = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        while next(tickets) < max_requests and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection.request("POST", "/submit", body=_BODY, headers=_HEADERS)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    with lock:
                        errors.append(f"HTTP {response.status}")
                    continue
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    errors.append(repr(error))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    result = {
        "elapsed": elapsed,
        "latencies": latencies,
        "error_count": len(errors),
        "errors": errors[:20],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
