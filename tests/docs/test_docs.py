"""The docs keep their code in examples/, and what they name exists.

Docs rule: a fenced code block in docs/*.md or README.md is at most three lines long.
Longer code lives in examples/*.py, which the docs name by path and show with an include
marker block (`--8<-- "examples/quickstart.py"`, the pymdownx.snippets syntax). Mermaid
diagrams are pictures, not code, and are exempt.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPOSITORY

PACKAGE = REPOSITORY / "src" / "fastapi_jobpoller"
DOCUMENTS = [*sorted((REPOSITORY / "docs").glob("*.md")), REPOSITORY / "README.md"]
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
    modules = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    # A private package's __init__.py holds its docstring only: the map names its modules.
    docstring_only = {
        module
        for module in modules
        if module.endswith("/__init__.py")
        and module.startswith("_")
        and all(
            isinstance(node, ast.Expr)
            for node in ast.parse((PACKAGE / module).read_text(encoding="utf-8")).body
        )
    }
    modules -= docstring_only
    named = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.MULTILINE))
    assert sorted(modules - named) == [], "modules missing from docs/architecture.md"
    assert sorted(named - modules) == [], "docs/architecture.md names modules that do not exist"


def test_the_architecture_page_has_exactly_one_diagram() -> None:
    document = REPOSITORY / "docs" / "architecture.md"
    diagrams = [block for block in code_blocks(document) if block.language == "mermaid"]
    assert len(diagrams) == 1
