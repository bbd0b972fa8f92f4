"""HTTP load for the submit API, from its own process, over loopback only.

`python bench_load.py PORT CONCURRENCY MAX_REQUESTS MAX_SECONDS [RATE]` sends
`POST /submit` from CONCURRENCY threads, each with one keep-alive connection, until
MAX_REQUESTS were sent or MAX_SECONDS passed, and prints one JSON line: the latencies
and errors.

Without RATE the clients are a closed loop: each sends its next request as soon as the
last one is answered, which measures the most requests per second the app serves (its
latency is then mostly the clients' own queue: 10 clients / rate). With RATE (requests
per second) the load is an open loop: request k is due at start + k / RATE, whichever
client is free sends it, and its latency counts from when it was due, not from when it
was sent, so a stalled app cannot hide its stall by slowing the clients down. Requests
that fell due in the window but could not be sent before it ended (every client was
still waiting for an answer) count with the time they had waited by then, a lower bound.
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
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else None
    tickets = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    origin = time.perf_counter() + 0.05
    deadline = origin + max_seconds

    sent: set[int] = set()

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        while True:
            ticket = next(tickets)
            if ticket >= max_requests or time.perf_counter() >= deadline:
                break
            if rate is None:
                started = time.perf_counter()
            else:
                started = origin + ticket / rate
                if started >= deadline:
                    break
                time.sleep(max(started - time.perf_counter(), 0.0))
            with lock:
                sent.add(ticket)
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

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.perf_counter()
    # Closed loop: until the last answer. Paced: the window (its rate is given anyway).
    elapsed = ended - origin if rate is None else min(ended, deadline) - origin
    unsent = 0
    if rate is not None:
        due = min(max_requests, int(max_seconds * rate))
        waited = [ended - (origin + k / rate) for k in range(due) if k not in sent]
        unsent = len(waited)
        latencies.extend(waited)
    result = {
        "elapsed": elapsed,
        "rate": rate,
        "unsent": unsent,
        "latencies": latencies,
        "error_count": len(errors),
        "errors": errors[:20],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
