"""docs/configuration.md stays true: its tables list every setting, and only real ones,
each with its environment variable and its default as the code has them."""

import re
from pathlib import Path

import pytest

from fastapi_jobpoller import ConfigurationError, JobPoller, JobPollerSettings

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
# A table row that documents one setting: | `field` | `ENV_VAR` | default | meaning |
ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*`(\w+)`\s*\|([^|]*)\|")


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


def rendered_default(value: object) -> str:
    """Write a default the way the docs do: unset, true/false, 30 rather than 30.0."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    assert sorted(documented()) == sorted(JobPollerSettings.model_fields)


@pytest.mark.parametrize("field", sorted(JobPollerSettings.model_fields))
def test_each_setting_is_documented_with_its_env_var_and_default(field: str) -> None:
    env_var, default = documented()[field]
    assert env_var == f"JOBPOLLER_{field.upper()}"
    assert default == rendered_default(JobPollerSettings.model_fields[field].default)


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
