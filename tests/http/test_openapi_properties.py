"""Property-based: requests drawn from the API's own OpenAPI schema, valid and invalid,
never get a 5xx and never get an answer the schema does not declare.

Schemathesis draws the requests; a real uvicorn server on loopback answers them, so the
poller runs exactly as it does in production. Valid drawings are steered to registered
function names and, half of the time, to ids that exist, so that the success paths (and
their response schemas) are exercised too, not only the 404s and 422s.
"""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastapi_jobpoller import Done, Failed, JobPoller, Pending, PollInfo, mount_scheduler
from tests.conftest import FAST_SETTINGS

API_KEY = "openapi-property-key-00000001"
# Enough drawings to reach every operation many times, few enough for a quick run.
EXAMPLES = 500


def build_app(tmp_path: Path) -> FastAPI:
    poller = JobPoller(
        **{
            **FAST_SETTINGS,
            "database_url": f"sqlite:///{tmp_path}/jobpoller.db",
            "api_key": API_KEY,
            # Keeps drawn wait requests short.
            "max_wait_seconds": 0.2,
            "max_page_size": 50,
        }
    )

    @poller.poll_function()
    def check_transfer(ticket: str, polls_needed: int = 2) -> Pending | Done | Failed:
        if ticket.startswith("fail"):
            return Failed("refused", result={"ticket": ticket})
        return Done({"ticket": ticket}) if polls_needed <= 1 else Pending(progress=ticket)

    @poller.job_function()
    def nightly_report(label: str = "report") -> str:
        return label

    @poller.callback()
    def announce(poll: PollInfo) -> None:
        return None

    app = FastAPI()
    mount_scheduler(app, poller)
    return app


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """Serve the app with uvicorn on a free loopback port, lifespan included."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    server = uvicorn.Server(uvicorn.Config(build_app(tmp_path), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
        listener.close()


VALID_TRIGGERS: list[dict[str, Any]] = [
    {"type": "date", "run_date": "2100-01-01T00:00:00Z"},
    {"type": "interval", "minutes": 30},
    {"type": "cron", "expression": "15 2 * * mon-fri", "timezone": "Europe/Paris"},
]


def steer(data: st.DataObject, case: schemathesis.Case[Any], known: dict[str, list[str]]) -> None:
    """Point a valid drawing at registered functions and, often, at existing ids."""
    body = case.body
    if isinstance(body, dict) and case.method == "POST" and case.path.endswith("/polls"):
        body["function"] = "check_transfer"
        body["arguments"] = {
            "ticket": data.draw(st.sampled_from(["ok", "fail"])),
            "polls_needed": data.draw(st.integers(1, 3)),
        }
        if body.get("callbacks"):
            body["callbacks"] = ["announce"]
    elif isinstance(body, dict) and case.method == "POST" and case.path.endswith("/jobs"):
        body["function"] = "nightly_report"
        body["arguments"] = {}
        # Half of the triggers stay as drawn: odd dates and fields reach the scheduler.
        if data.draw(st.booleans()):
            body["trigger"] = data.draw(st.sampled_from(VALID_TRIGGERS))
    elif isinstance(body, dict) and case.method == "PATCH" and "arguments" in body:
        body["arguments"] = {"label": "patched"}
    for name, kind in (("poll_id", "polls"), ("job_id", "jobs")):
        if name in (case.path_parameters or {}) and data.draw(st.booleans()):
            case.path_parameters[name] = data.draw(st.sampled_from(known[kind]))


def create_some(base_url: str) -> dict[str, list[str]]:
    """Create polls and jobs up front, so drawn ids can name existing ones."""
    known: dict[str, list[str]] = {"polls": [], "jobs": []}
    with httpx2.Client(base_url=base_url, headers={"X-API-Key": API_KEY}) as client:
        for ticket, polls_needed in (("ok", 1), ("ok", 1000), ("fail", 1)):
            arguments = {"ticket": ticket, "polls_needed": polls_needed}
            response = client.post(
                "/jobpoller/polls",
                json={"function": "check_transfer", "arguments": arguments, "interval": 60},
            )
            known["polls"].append(response.raise_for_status().json()["id"])
        for trigger in VALID_TRIGGERS:
            response = client.post(
                "/jobpoller/jobs", json={"function": "nightly_report", "trigger": trigger}
            )
            known["jobs"].append(response.raise_for_status().json()["id"])
    return known


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "anonymous"])
def test_no_drawn_request_gets_a_server_error_or_an_undeclared_answer(
    base_url: str, with_key: bool
) -> None:
    schema = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json",
        config=schemathesis.Config.from_dict(
            {
                # Anonymous: every route but /health must answer a declared 401.
                "headers": {"X-API-Key": API_KEY} if with_key else {},
                "generation": {
                    # Unknown query parameters are ignored, as HTTP APIs usually do.
                    "allow-extra-parameters": False,
                    # Auth has its own tests; here every request carries the key.
                    "with-security-parameters": False,
                },
                "checks": {
                    # A valid-looking but unregistered function name is rightly a 422;
                    # anonymous, everything is rightly a 401.
                    "positive_data_acceptance": {"enabled": False},
                    # Every request the schema forbids is refused with a 4xx: no
                    # leniency (a number for a date-time, say) the schema does not state.
                    "negative_data_rejection": {"enabled": True},
                },
            }
        ),
    )
    valid = schema.as_strategy(schemathesis.GenerationMode.POSITIVE)
    invalid = schema.as_strategy(schemathesis.GenerationMode.NEGATIVE)
    known = create_some(base_url)
    statuses: dict[tuple[str, str], set[int]] = {}

    @given(data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def drawn_request_is_answered_as_declared(data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            case = data.draw(valid)
            steer(data, case, known)
        else:
            case = data.draw(invalid)
        response = case.call_and_validate(base_url=base_url)
        statuses.setdefault((case.method, case.path), set()).add(response.status_code)

    drawn_request_is_answered_as_declared()
    # Every operation was reached.
    assert len(statuses) == len(schema)
    if not with_key:
        # Only health answers a stranger: the negative drawings of the other routes
        # may fail earlier checks (a 404 route), but never get past the key check.
        answered = {
            code for (_, path), codes in statuses.items() if "health" not in path for code in codes
        }
        assert answered <= {401, 404, 405, 413}, answered
