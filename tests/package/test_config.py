"""Settings from the environment."""

import pytest

from fastapi_jobpoller import JobPollerSettings


def test_none_in_the_environment_turns_an_optional_limit_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBPOLLER_HISTORY_MAX_AGE_SECONDS", "none")
    monkeypatch.setenv("JOBPOLLER_HISTORY_MAX_RUNS_PER_JOB", "250")
    settings = JobPollerSettings()
    assert settings.history_max_age_seconds is None
    assert settings.history_max_runs_per_job == 250
