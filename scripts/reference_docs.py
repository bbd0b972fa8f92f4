"""Write the "At a glance" part of docs/reference.md from the package itself.

The site renders every public name in full from its docstrings (the `::: name` entries,
through mkdocstrings); a plain Markdown viewer shows those entries as bare directives.
So the page opens with a summary that reads anywhere: every method of `JobPoller` with its
parameters, and every other public name, each with the first line of its docstring. It
sits between two comment lines:

    <!-- glance -->
    (generated)
    <!-- end glance -->

- `python scripts/reference_docs.py` rewrites that part of docs/reference.md;
- `python scripts/reference_docs.py --check` only tells whether it is up to date (a test
  runs that check, so a new method or a changed docstring cannot leave the page behind).
"""

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi_jobpoller

__all__ = ["REFERENCE_PAGE", "render_glance", "render_page"]

REFERENCE_PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
_BLOCK = re.compile(r"(<!-- glance -->\n).*?(<!-- end glance -->)", re.DOTALL)
_SHOWN_DEFAULTS = (type(None), bool, int, float, str)


def _summary(thing: Any) -> str:
    doc = inspect.getdoc(thing) or ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def _parameter(parameter: inspect.Parameter) -> str:
    if parameter.kind is parameter.VAR_KEYWORD:
        return f"**{parameter.name}"
    if parameter.kind is parameter.VAR_POSITIONAL:
        return f"*{parameter.name}"
    if parameter.default is parameter.empty:
        return parameter.name
    default = parameter.default
    shown = repr(default) if isinstance(default, _SHOWN_DEFAULTS) else "…"
    return f"{parameter.name}={shown}"


def _signature(function: Callable[..., Any]) -> str:
    parameters = list(inspect.signature(function).parameters.values())[1:]  # without self
    parts: list[str] = []
    starred = False
    for parameter in parameters:
        if parameter.kind is parameter.KEYWORD_ONLY and not starred:
            parts.append("*")
        starred = starred or parameter.kind in (parameter.KEYWORD_ONLY, parameter.VAR_POSITIONAL)
        parts.append(_parameter(parameter))
    return ", ".join(parts)


def _method_rows() -> list[str]:
    rows = []
    for name, member in inspect.getmembers(fastapi_jobpoller.JobPoller):
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            call = f"`poller.{name}`"
        else:
            awaited = "await " if inspect.iscoroutinefunction(inspect.unwrap(member)) else ""
            call = f"`{awaited}poller.{name}({_signature(member)})`"
        rows.append(f"| {call} | {_summary(member)} |")
    return rows


def render_glance() -> str:
    """Return the generated Markdown: the poller's methods, then every public name."""
    lines = [
        "### `JobPoller`, method by method",
        "",
        "| Call | What it does |",
        "|---|---|",
        *_method_rows(),
        "",
        "### Every public name",
        "",
        "| Name | What it is |",
        "|---|---|",
    ]
    for name in sorted(fastapi_jobpoller.__all__, key=str.lower):
        if name == "__version__":
            lines.append("| `__version__` | The installed version, e.g. `0.1.0`. |")
        else:
            lines.append(f"| `{name}` | {_summary(getattr(fastapi_jobpoller, name))} |")
    return "\n".join(lines) + "\n"


def render_page(page: str) -> str:
    """Return `page` with its glance block replaced by a fresh rendering."""
    if not _BLOCK.search(page):
        raise ValueError("docs/reference.md has no <!-- glance --> block")
    return _BLOCK.sub(lambda m: m.group(1) + render_glance() + m.group(2), page, count=1)


def main(argv: list[str]) -> int:
    page = REFERENCE_PAGE.read_text(encoding="utf-8")
    fresh = render_page(page)
    if "--check" in argv:
        if fresh != page:
            sys.stderr.write("docs/reference.md is stale: run python scripts/reference_docs.py\n")
            return 1
        return 0
    REFERENCE_PAGE.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
