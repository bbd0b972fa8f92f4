"""Everyday mistakes get a message that says how to fix them, or just work."""

import pytest

from fastapi_jobpoller import (
    ConfigurationError,
    Done,
    JobPoller,
    JobPollerSettings,
    NotRunningError,
)
from tests.conftest import PollerFactory
from tests.helpers import sqlite_only

pytestmark = pytest.mark.anyio


@sqlite_only
def test_the_registration_decorators_work_without_parentheses_too(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function
    def forgot_parens() -> Done:
        return Done()

    @poller.job_function
    def nightly() -> None:
        return None

    @poller.callback
    def tell(poll: object) -> None:
        return None

    assert forgot_parens() == Done()  # still the function, not a registration helper
    assert poller.function_names("poll") == ["forgot_parens"]
    assert poller.function_names("job") == ["nightly"]
    assert poller.function_names("callback") == ["tell"]


@sqlite_only
def test_a_lambda_is_refused_with_the_reason_and_the_way_out(make_poller: PollerFactory) -> None:
    poller = make_poller()
    with pytest.raises(ConfigurationError) as refused:
        poller.poll_function()(lambda: Done())
    message = str(refused.value)
    assert "lambda" in message and "name" in message and "def" in message


@sqlite_only
def test_settings_may_be_given_by_keyword(database_url: str) -> None:
    settings = JobPollerSettings(database_url=database_url, table_prefix="kw_")
    assert JobPoller(settings=settings).settings.table_prefix == "kw_"


@sqlite_only
async def test_calling_a_poller_that_is_not_started_names_the_usual_way_to_start_it(
    make_poller: PollerFactory,
) -> None:
    with pytest.raises(NotRunningError) as refused:
        await make_poller().list_polls()
    assert "mount_scheduler(app, poller)" in str(refused.value)


def test_a_settings_error_never_prints_the_secret_it_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBPOLLER_API_KEY", "shortsecret")
    with pytest.raises(ConfigurationError) as refused:
        JobPoller()
    assert "shortsecret" not in str(refused.value) and "api_key" in str(refused.value)
    monkeypatch.delenv("JOBPOLLER_API_KEY")
    with pytest.raises(ValueError) as refused_directly:
        JobPollerSettings(read_api_key="tiny-secret")
    assert "tiny-secret" not in str(refused_directly.value)


def test_shown_settings_hide_the_database_password() -> None:
    url = "postgresql+psycopg://app:s3cr3t-pw@db.internal/orders"
    settings = JobPollerSettings(database_url=url)
    for shown in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cr3t-pw" not in shown and "app:***@db.internal" in shown
    assert "s3cr3t-pw" not in settings.model_dump_json()
    # The real URL is what connects, also after overrides.
    assert settings.database_url == url
    assert JobPoller(settings, table_prefix="other_").settings.database_url == url
