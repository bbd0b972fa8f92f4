"""The public API is exactly what the API reference documents: `fastapi_jobpoller.__all__`
names every entry of docs/reference.md, and nothing more is exported."""

import re
from pathlib import Path
from types import ModuleType

import fastapi_jobpoller

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
# A mkdocstrings entry: `::: fastapi_jobpoller.Name` on a line of its own.
ENTRY = re.compile(r"^::: fastapi_jobpoller\.(\w+)\s*$", re.MULTILINE)


def documented() -> list[str]:
    return ENTRY.findall(REFERENCE.read_text(encoding="utf-8"))


def test_all_is_exactly_the_names_the_api_reference_documents() -> None:
    names = documented()
    assert len(names) == len(set(names)), "a name is documented twice"
    assert sorted(names) == sorted(fastapi_jobpoller.__all__)


def test_every_name_in_all_is_importable_from_the_package() -> None:
    missing = [name for name in fastapi_jobpoller.__all__ if not hasattr(fastapi_jobpoller, name)]
    assert missing == []


def test_the_package_exports_nothing_public_beyond_all() -> None:
    exported = {
        name
        for name, value in vars(fastapi_jobpoller).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert sorted(exported - set(fastapi_jobpoller.__all__)) == []
