"""The examples run as the docs say, and the docs keep their code in examples/.

The quickstart is imported afresh for each test, after the environment is set, because
`JobPoller()` reads its `JOBPOLLER_*` settings when the module builds it.

Docs rule: a fenced code block in docs/*.md or README.md is at most three lines long.
Longer code lives in examples/*.py, which the docs name by path and show with an include
marker block (`--8<-- "examples/quickstart.py"`, the pymdownx.snippets syntax). Mermaid
diagrams are pictures, not code, and are exempt.
"""

import functools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_jobpoller import JobRunState
from tests.helpers import REPOSITORY
from tests.support.examples_support import (
    WAIT_SECONDS,
    clear_settings_environment,
    load_example,
    poller_of,
)

PACKAGE = REPOSITORY / "src" / "fastapi_jobpoller"
DOCUMENTS = [*sorted((REPOSITORY / "docs").glob("*.md")), REPOSITORY / "README.md"]
API_KEY = "quickstart-test-key-0123456789"


# -- the quickstart ------------------------------------------------------------------


@pytest.fixture
def quickstart(monkeypatch: pytest.MonkeyPatch, database_url: str, table_prefix: str) -> ModuleType:
    """The quickstart module, built with its database pointed at the test's database."""
    clear_settings_environment(monkeypatch)
    monkeypatch.setenv("JOBPOLLER_DATABASE_URL", database_url)
    monkeypatch.setenv("JOBPOLLER_TABLE_PREFIX", table_prefix)
    monkeypatch.setenv("JOBPOLLER_API_KEY", API_KEY)
    return load_example("quickstart")


def app_of(module: ModuleType) -> FastAPI:
    app = module.app
    assert isinstance(app, FastAPI)
    return app


def wait_until_ended(client: TestClient, poll_id: str) -> dict[str, Any]:
    give_up_at = time.monotonic() + WAIT_SECONDS
    while True:
        response = client.get(f"/status/{poll_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["state"] not in ("pending", "running") or time.monotonic() > give_up_at:
            return status
        time.sleep(0.1)


def test_the_quickstart_watches_an_external_job_until_it_succeeds(
    quickstart: ModuleType,
) -> None:
    with TestClient(app_of(quickstart)) as client:
        started = client.post("/start")
        assert started.status_code == 202, started.text
        poll_id = started.json()["poll_id"]

        status = wait_until_ended(client, poll_id)

    assert status["state"] == "succeeded"
    assert status["progress"] == "2 of 3 checks"
    assert status["result"]["rows"] == 42
    assert quickstart.status_checks[status["result"]["external_id"]] == 3


def test_the_quickstart_answers_404_for_an_unknown_poll(quickstart: ModuleType) -> None:
    with TestClient(app_of(quickstart)) as client:
        response = client.get("/status/no-such-poll")
    assert response.status_code == 404


def test_the_quickstarts_scheduled_job_runs_on_its_interval(quickstart: ModuleType) -> None:
    poller = poller_of(quickstart)
    with TestClient(app_of(quickstart)) as client:
        portal = client.portal
        assert portal is not None
        give_up_at = time.monotonic() + WAIT_SECONDS
        finished: list[Any] = []
        while not finished and time.monotonic() < give_up_at:
            time.sleep(0.1)
            runs = portal.call(functools.partial(poller.list_job_runs, job_id="backlog"))
            finished = [run for run in runs if run.finished_at is not None]

    assert finished, "the backlog job never finished a run"
    assert finished[0].state is JobRunState.SUCCEEDED
    assert finished[0].result == 0


def test_the_quickstarts_management_api_needs_the_api_key(quickstart: ModuleType) -> None:
    with TestClient(app_of(quickstart)) as client:
        anonymous = client.get("/jobpoller/jobs/backlog")
        with_key = client.get("/jobpoller/jobs/backlog", headers={"X-API-Key": API_KEY})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    assert with_key.status_code == 200
    assert with_key.json()["function"] == "report_backlog"


def test_a_second_quickstart_process_keeps_the_job_the_first_one_added(
    quickstart: ModuleType,
) -> None:
    # Same environment, so the same database: like a second `uvicorn --workers` process.
    second = load_example("quickstart")
    with TestClient(app_of(quickstart)), TestClient(app_of(second)) as client:
        response = client.get("/jobpoller/jobs", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    assert [job["id"] for job in response.json()["items"]] == ["backlog"]


# -- the docs --------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
INCLUDE = re.compile(r'^\s*--8<--\s+"([^"]+)"\s*$')
EXAMPLE_PATH = re.compile(r"\bexamples/[\w./-]+\.py\b")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class CodeBlock:
    document: Path
    line: int
    language: str
    lines: list[str]
    closed: bool

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(REPOSITORY)}:{self.line}"

    @property
    def includes(self) -> list[str]:
        """The included paths, if every line of the block is an include marker."""
        text = [line for line in self.lines if line.strip()]
        matches = [INCLUDE.match(line) for line in text]
        if not text or not all(matches):
            return []
        return [match.group(1) for match in matches if match]


def code_blocks(document: Path) -> Iterator[CodeBlock]:
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence = opening.group(1)
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        start, body = index, []
        while index < len(lines) and not closing.match(lines[index]):
            body.append(lines[index])
            index += 1
        closed = index < len(lines)
        index += 1
        yield CodeBlock(document, start, opening.group(2).lower(), body, closed)


def all_code_blocks() -> list[CodeBlock]:
    return [block for document in DOCUMENTS for block in code_blocks(document)]


def test_the_docs_exist() -> None:
    names = {document.name for document in DOCUMENTS}
    expected = {"index.md", "getting-started.md", "architecture.md", "configuration.md"}
    assert expected | {"http-api.md", "auth.md", "README.md"} <= names


def test_no_code_block_in_the_docs_is_longer_than_three_lines() -> None:
    too_long = [
        f"{block.where} ({len(block.lines)} lines)"
        for block in all_code_blocks()
        if block.language != "mermaid" and not block.includes and len(block.lines) > 3
    ]
    assert too_long == [], "move these into examples/*.py and include them"


def test_every_code_block_in_the_docs_is_closed() -> None:
    assert [block.where for block in all_code_blocks() if not block.closed] == []


def test_every_included_file_is_an_example_that_exists() -> None:
    included = [(block.where, path) for block in all_code_blocks() for path in block.includes]
    assert included, "the docs include no example"
    wrong = [
        f"{where}: {path}"
        for where, path in included
        if not path.startswith("examples/") or not (REPOSITORY / path).is_file()
    ]
    assert wrong == []


def test_every_example_path_the_docs_mention_exists() -> None:
    mentioned = {
        (document.name, path)
        for document in DOCUMENTS
        for path in EXAMPLE_PATH.findall(document.read_text(encoding="utf-8"))
    }
    assert mentioned
    assert [m for m in sorted(mentioned) if not (REPOSITORY / m[1]).is_file()] == []


def test_every_relative_link_in_the_docs_points_to_a_file() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (document.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{document.name}: {target}")
    assert broken == []


def test_the_architecture_module_map_names_every_module_and_only_real_ones() -> None:
    text = (REPOSITORY / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = {path.name for path in PACKAGE.glob("*.py")}
    named = set(re.findall(r"`(\w+\.py)`", text))
    assert sorted(modules - named) == [], "modules missing from docs/architecture.md"
    assert sorted(named - modules) == [], "docs/architecture.md names modules that do not exist"


def test_the_architecture_page_has_exactly_one_diagram() -> None:
    document = REPOSITORY / "docs" / "architecture.md"
    diagrams = [block for block in code_blocks(document) if block.language == "mermaid"]
    assert len(diagrams) == 1
