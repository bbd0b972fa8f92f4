"""Fill the settings tables of docs/configuration.md from `JobPollerSettings`.

The page's headings and prose are written by hand. Each table sits between two comment
lines that name the settings it lists, in order:

    <!-- settings: database_url table_prefix -->
    (generated table)
    <!-- end settings -->

and is generated from the model: each field's environment variable, default, accepted
values and description. Every setting must be in exactly one table, so a new setting
fails the build until the page says where it belongs.

- `mkdocs build` loads this file as a hook (see mkdocs.yml): the site's tables always
  come from the code.
- `python scripts/settings_docs.py` rewrites docs/configuration.md, so the page reads the
  same on a plain Markdown viewer; `--check` only tells whether it is up to date (a test
  runs that check too).
"""

import re
import sys
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from fastapi_jobpoller import JobPollerSettings

if TYPE_CHECKING:
    from mkdocs.structure.pages import Page

__all__ = ["CONFIGURATION_PAGE", "env_var", "render_default", "render_page", "settings_table"]

CONFIGURATION_PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# `<!-- settings: a b c -->`, the generated lines, then `<!-- end settings -->`.
_REGION = re.compile(
    r"^<!-- settings: (?P<names>[\w ]+?) -->\n(?P<table>.*?)^<!-- end settings -->$",
    re.MULTILINE | re.DOTALL,
)
# The field and its variable share a cell, one above the other, so the table fits a page.
_HEADER = "| Setting and env var | Default | Meaning |\n|---|---|---|\n"


def env_var(name: str) -> str:
    """Return the environment variable of a setting."""
    prefix = JobPollerSettings.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def render_default(value: object) -> str:
    """Write a default as the page shows it: unset, true/false, 30 rather than 30.0."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Keep a table cell on one line and its pipes out of the table's structure."""
    return " ".join(text.split()).replace("|", "\\|")


def _admits_none(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return type(None) in typing.get_args(annotation)
    return False


def _base_type(annotation: Any) -> Any:
    """Return the type a value has when set: `float | None` gives `float`."""
    if _admits_none(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


# How the *Accepts* column names a setting's type.
_TYPE_WORDS: dict[Any, str] = {int: "integer", float: "number", str: "text", SecretStr: "text"}


def _accepts(field: FieldInfo) -> str:
    """Describe the values a setting accepts, from its type and constraints."""
    annotation = _base_type(field.annotation)
    if typing.get_origin(annotation) is Literal:
        words = ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    elif annotation is bool:
        words = "`true`, `false`"
    else:
        words = _TYPE_WORDS.get(annotation, "any")
    limits: list[str] = []
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            limits.append(f"≥ {_number(constraint.ge)}")
        elif isinstance(constraint, annotated_types.Gt):
            limits.append(f"> {_number(constraint.gt)}")
        elif isinstance(constraint, annotated_types.Le):
            limits.append(f"≤ {_number(constraint.le)}")
        elif isinstance(constraint, annotated_types.Lt):
            limits.append(f"< {_number(constraint.lt)}")
        elif isinstance(constraint, annotated_types.MinLen):
            length = constraint.min_length
            limits.append("not empty" if length == 1 else f"of at least {length} characters")
        elif isinstance(constraint, annotated_types.MaxLen):
            limits.append(f"of at most {constraint.max_length} characters")
        elif getattr(constraint, "pattern", None):
            limits.append(f"matching `{constraint.pattern}`")
    text = " ".join([words, ", ".join(limits)]).strip()
    if _admits_none(field.annotation):
        text += ", or `none` to unset it"
    return text


def settings_table(names: list[str]) -> str:
    """Return the Markdown table of the named settings, one row each, in that order.

    Raises:
        ValueError: A name is not a setting, or a setting has no description.
    """
    fields = JobPollerSettings.model_fields
    rows = [_HEADER]
    for name in names:
        field = fields.get(name)
        if field is None:
            raise ValueError(f"{name!r} is not a field of JobPollerSettings")
        if not field.description:
            raise ValueError(f"setting {name!r} has no description to show")
        default = render_default(field.default)
        cells = (
            f"`{name}`<br>`{env_var(name)}`",
            default if field.default is None else f"`{default}`",
            f"{field.description} *Accepts:* {_accepts(field)}.",
        )
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |\n")
    return "".join(rows)


def render_page(markdown: str) -> str:
    """Regenerate every settings table of the page's Markdown.

    Raises:
        ValueError: A setting is in no table or in two, or a table names a non-setting.
    """
    placed: list[str] = []

    def regenerate(match: re.Match[str]) -> str:
        names = match.group("names").split()
        placed.extend(names)
        return f"<!-- settings: {' '.join(names)} -->\n{settings_table(names)}<!-- end settings -->"

    rendered = _REGION.sub(regenerate, markdown)
    twice = sorted({name for name in placed if placed.count(name) > 1})
    missing = sorted(set(JobPollerSettings.model_fields) - set(placed))
    if twice or missing:
        raise ValueError(
            f"every setting must be in exactly one table of the page; in two: {twice}, "
            f"in none: {missing}"
        )
    return rendered


def on_page_markdown(markdown: str, *, page: "Page", **_: object) -> str | None:
    """MkDocs hook: generate the configuration page's tables as the site is built."""
    if page.file.src_uri != CONFIGURATION_PAGE.name:
        return None
    from mkdocs.exceptions import PluginError

    try:
        return render_page(markdown)
    except ValueError as exc:
        raise PluginError(f"{page.file.src_uri}: {exc}") from None


def main(arguments: list[str]) -> int:
    """Rewrite docs/configuration.md, or with `--check` report whether it is stale."""
    current = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    rendered = render_page(current)
    if arguments == ["--check"]:
        if rendered != current:
            sys.stderr.write(f"{CONFIGURATION_PAGE.name} is stale: run {Path(__file__).name}\n")
            return 1
        return 0
    CONFIGURATION_PAGE.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
