"""docs/configuration.md stays true: its tables list every setting, and only real ones,
each with its environment variable and its default as the code has them.

The tables are generated from `JobPollerSettings` by scripts/settings_docs.py, at every
docs build (as a MkDocs hook) and into the committed page; these tests read the
committed page, check that it is what the generator makes now, and check the generator.
"""

import re
import typing
from typing import Literal

import pytest
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File
from mkdocs.structure.pages import Page
from scripts.settings_docs import (
    on_page_markdown,
    render_default,
    render_page,
    settings_table,
)

from fastapi_jobpoller import ConfigurationError, JobPoller, JobPollerSettings
from tests.helpers import REPOSITORY

DOCUMENT = REPOSITORY / "docs" / "configuration.md"
# A table row that documents one setting: | `field`<br>`ENV_VAR` | default | meaning |
ROW = re.compile(r"^\|\s*`(\w+)`<br>`(\w+)`\s*\|([^|]*)\|")


def documented() -> dict[str, tuple[str, str]]:
    """Map each documented field to its (env var, default) cells, backticks removed."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOCUMENT.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            field, env_var, default = match.groups()
            assert field not in rows, f"{field} is documented twice"
            rows[field] = (env_var, default.strip().strip("`"))
    return rows


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    assert sorted(documented()) == sorted(JobPollerSettings.model_fields)


@pytest.mark.parametrize("field", sorted(JobPollerSettings.model_fields))
def test_each_setting_is_documented_with_its_env_var_and_default(field: str) -> None:
    env_var, default = documented()[field]
    assert env_var == f"JOBPOLLER_{field.upper()}"
    assert default == render_default(JobPollerSettings.model_fields[field].default)


def test_every_env_var_the_page_names_is_a_setting() -> None:
    named = set(re.findall(r"JOBPOLLER_\w+", DOCUMENT.read_text(encoding="utf-8")))
    settings = {f"JOBPOLLER_{field.upper()}" for field in JobPollerSettings.model_fields}
    assert sorted(named - settings) == []


def test_a_documented_env_var_really_sets_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBPOLLER_LEASE_SECONDS", "42")
    monkeypatch.setenv("jobpoller_coalesce", "false")  # names are not case-sensitive
    settings = JobPollerSettings()
    assert settings.lease_seconds == 42.0
    assert settings.coalesce is False


def test_keyword_settings_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBPOLLER_THREAD_POOL_SIZE", "3")
    assert JobPoller(thread_pool_size=7).settings.thread_pool_size == 7


def test_an_invalid_setting_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="api_key"):
        JobPoller(api_key="too-short")


# -- the generator ---------------------------------------------------------------------

TABLES = re.compile(r"(<!-- settings: [\w ]+ -->\n).*?(<!-- end settings -->)", re.DOTALL)


def page_without_tables() -> str:
    """The committed page with every generated table taken out, markers kept."""
    return TABLES.sub(r"\1\2", DOCUMENT.read_text(encoding="utf-8"))


def as_page(name: str) -> Page:
    file = File(name, src_dir="docs", dest_dir="site", use_directory_urls=True)
    return Page(None, file, MkDocsConfig())


def test_the_committed_page_is_what_the_generator_makes_from_the_settings_now() -> None:
    current = DOCUMENT.read_text(encoding="utf-8")
    assert render_page(current) == current, "run: python scripts/settings_docs.py"


def test_the_docs_build_hook_fills_the_tables_of_the_configuration_page_only() -> None:
    bare = page_without_tables()
    assert "JOBPOLLER_LEASE_SECONDS" not in bare
    built = on_page_markdown(bare, page=as_page("configuration.md"))
    assert built == DOCUMENT.read_text(encoding="utf-8")
    assert on_page_markdown(bare, page=as_page("index.md")) is None


def test_a_setting_left_out_of_every_table_fails_the_docs_build() -> None:
    bare = page_without_tables().replace(" lease_seconds ", " ")
    with pytest.raises(PluginError, match=r"in none: \['lease_seconds'\]"):
        on_page_markdown(bare, page=as_page("configuration.md"))


def test_a_setting_in_two_tables_or_a_name_that_is_no_setting_is_refused() -> None:
    twice = page_without_tables().replace(
        "<!-- settings: misfire_grace_time", "<!-- settings: lease_seconds misfire_grace_time"
    )
    with pytest.raises(ValueError, match=r"in two: \['lease_seconds'\]"):
        render_page(twice)
    with pytest.raises(ValueError, match="'lease_secs' is not a field"):
        settings_table(["lease_secs"])


def test_every_generated_row_has_exactly_the_three_cells_of_the_header() -> None:
    rows = settings_table(sorted(JobPollerSettings.model_fields)).splitlines()
    for row in rows[:1] + rows[2:]:
        cells = re.split(r"(?<!\\)\|", row)
        assert len(cells) == 5, row  # three cells between the outer pipes


@pytest.mark.parametrize(
    "field",
    [
        name
        for name, f in JobPollerSettings.model_fields.items()
        if typing.get_origin(f.annotation) is Literal
    ],
)
def test_each_choice_the_page_lists_is_accepted_from_the_environment(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for choice in typing.get_args(JobPollerSettings.model_fields[field].annotation):
        monkeypatch.setenv(f"JOBPOLLER_{field.upper()}", choice)
        assert getattr(JobPollerSettings(), field) == choice


@pytest.mark.parametrize(
    "field",
    [
        name
        for name, f in JobPollerSettings.model_fields.items()
        if "`none` to unset it" in settings_table([name])
    ],
)
def test_each_setting_the_page_says_none_unsets_is_unset_by_none_in_the_environment(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"JOBPOLLER_{field.upper()}", "none")
    assert getattr(JobPollerSettings(), field) is None
