"""Registering functions by name, and checking a poll's arguments against the signature."""

import functools
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, PlainSerializer

from fastapi_jobpoller import (
    ConfigurationError,
    Done,
    FunctionNotFoundError,
    InvalidArgumentsError,
    JobPoller,
    PollState,
)
from fastapi_jobpoller._engine.registry import Registry
from tests.conftest import FAST_SETTINGS, PollerFactory
from tests.support import process_functions

pytestmark = pytest.mark.anyio


def finish() -> Done:
    return Done()


@pytest.fixture
def sqlite_poller(tmp_path: Path) -> JobPoller:
    """An unstarted poller on a SQLite file, for checks that no database changes."""
    return JobPoller(**{**FAST_SETTINGS, "database_url": f"sqlite:///{tmp_path}/registry.db"})


# -- names -------------------------------------------------------------------------------


def test_a_function_is_registered_under_its_own_name_by_default() -> None:
    registry = Registry()
    registered = registry.register("poll", finish)
    assert registered.name == "finish"
    assert registry.get("poll", "finish").func is finish


def test_an_explicit_name_replaces_the_function_name() -> None:
    registry = Registry()
    registry.register("poll", finish, name="export.finish-v2")
    assert registry.get("poll", "export.finish-v2").func is finish
    with pytest.raises(FunctionNotFoundError, match="'finish'"):
        registry.get("poll", "finish")


def test_each_kind_of_function_has_its_own_names() -> None:
    registry = Registry()
    for kind in ("poll", "job", "callback"):
        registry.register(kind, finish)
    assert [registry.get(kind, "finish").kind for kind in ("poll", "job", "callback")] == [
        "poll",
        "job",
        "callback",
    ]
    with pytest.raises(FunctionNotFoundError) as raised:
        Registry().get("job", "finish")
    assert raised.value.code == "function_not_found"


def test_a_name_already_registered_for_the_same_kind_is_refused() -> None:
    def other() -> Done:
        return Done()

    registry = Registry()
    registry.register("poll", finish)
    with pytest.raises(ConfigurationError, match="registered already"):
        registry.register("poll", other, name="finish")
    assert registry.get("poll", "finish").func is finish
    poller = JobPoller(database_url="sqlite:///unused.db")
    poller.poll_function()(finish)
    with pytest.raises(ConfigurationError, match="registered already"):
        poller.poll_function("finish")(other)


def test_function_names_lists_the_names_of_one_kind_sorted() -> None:
    poller = JobPoller(database_url="sqlite:///unused.db")
    poller.poll_function("b")(finish)
    poller.poll_function("a")(finish)
    poller.job_function("c")(finish)
    poller.callback("d")(finish)
    assert poller.function_names("poll") == ["a", "b"]
    assert poller.function_names("job") == ["c"]
    assert poller.function_names("callback") == ["d"]


def test_a_lambda_needs_an_explicit_name() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError, match="name"):
        registry.register("poll", lambda: Done())
    assert registry.register("poll", lambda: Done(), name="quick").name == "quick"


def test_a_name_may_have_up_to_191_characters() -> None:
    registry = Registry()
    assert registry.register("poll", finish, name="n" * 191).name == "n" * 191
    with pytest.raises(ConfigurationError, match="191"):
        registry.register("poll", finish, name="n" * 192)


def test_something_not_callable_is_refused() -> None:
    not_a_function: Any = 42
    with pytest.raises(ConfigurationError, match="not callable"):
        Registry().register("poll", not_a_function, name="x")


def test_an_unknown_executor_is_refused() -> None:
    executor: Any = "greenlet"
    with pytest.raises(ConfigurationError, match="executor"):
        Registry().register("poll", finish, executor=executor)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_max_concurrency_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        Registry().register("poll", finish, max_concurrency=limit)


# -- signatures --------------------------------------------------------------------------


def with_args(*items: int) -> Done:
    return Done()


def with_kwargs(**options: int) -> Done:
    return Done()


def with_positional_only(item: int, /) -> Done:
    return Done()


@pytest.mark.parametrize("func", [with_args, with_kwargs])
def test_star_args_and_star_star_kwargs_are_refused(func: Callable[..., Done]) -> None:
    with pytest.raises(ConfigurationError, match=r"\*args and \*\*kwargs"):
        Registry().register("poll", func)


def test_positional_only_parameters_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="positional-only"):
        Registry().register("poll", with_positional_only)


def test_a_type_hint_that_does_not_resolve_is_refused_at_registration() -> None:
    def broken(item: "NoSuchType") -> Done:  # type: ignore[name-defined] # noqa: F821
        return Done()

    with pytest.raises(ConfigurationError, match="type hints"):
        Registry().register("poll", broken)


def test_a_parameter_type_that_cannot_be_json_is_refused_at_registration() -> None:
    def with_socket(connection: socket.socket) -> Done:
        return Done()

    with pytest.raises(ConfigurationError, match="JSON-compatible"):
        Registry().register("poll", with_socket)


# -- process executor --------------------------------------------------------------------


def test_a_module_level_function_may_run_in_a_process() -> None:
    registry = Registry()
    registered = registry.register("poll", process_functions.report_pid, executor="process")
    assert registered.executor == "process"
    static = registry.register(
        "poll", process_functions.Checks.report_parent_pid, executor="process"
    )
    assert static.name == "report_parent_pid"


def test_a_lambda_is_refused_for_the_process_executor_even_with_a_name() -> None:
    with pytest.raises(ConfigurationError, match="module-level"):
        Registry().register("poll", lambda: Done(), name="quick", executor="process")


def test_a_nested_function_is_refused_for_the_process_executor() -> None:
    def nested() -> Done:
        return Done()

    with pytest.raises(ConfigurationError, match="module-level"):
        Registry().register("poll", nested, executor="process")
    # The same function is fine on a thread.
    assert Registry().register("poll", nested).executor == "thread"


def test_a_partial_is_refused_for_the_process_executor() -> None:
    partial = functools.partial(process_functions.report_pid, label="x")
    with pytest.raises(ConfigurationError, match="importable"):
        Registry().register("poll", partial, name="partial", executor="process")


def test_an_async_function_is_refused_for_the_process_executor() -> None:
    async def awaited() -> Done:
        return Done()

    with pytest.raises(ConfigurationError, match="event loop"):
        Registry().register("poll", awaited, executor="process")


# -- arguments at submit -----------------------------------------------------------------


def count_items(count: int, name: str, ratio: float = 0.5) -> Done:
    return Done()


async def test_arguments_of_the_wrong_type_fail_at_submit_with_an_error_per_field(
    sqlite_poller: JobPoller,
) -> None:
    sqlite_poller.poll_function()(count_items)
    async with sqlite_poller:
        with pytest.raises(InvalidArgumentsError) as raised:
            await sqlite_poller.start_poll("count_items", {"count": "many", "name": 3})
        assert await sqlite_poller.list_polls() == []
    error = raised.value
    assert error.code == "invalid_arguments"
    assert [(e["loc"], e["type"]) for e in error.errors] == [
        (["count"], "int_parsing"),
        (["name"], "string_type"),
    ]
    assert all(isinstance(e["msg"], str) and e["msg"] for e in error.errors)
    assert "count_items" in str(error)
    assert "count:" in str(error)


async def test_missing_and_unknown_arguments_fail_at_submit(sqlite_poller: JobPoller) -> None:
    sqlite_poller.poll_function()(count_items)
    async with sqlite_poller:
        with pytest.raises(InvalidArgumentsError) as raised:
            await sqlite_poller.start_poll("count_items", {"count": 1, "colour": "red"})
    assert sorted((e["loc"], e["type"]) for e in raised.value.errors) == [
        (["colour"], "extra_forbidden"),
        (["name"], "missing"),
    ]


async def test_arguments_are_stored_coerced_and_with_their_defaults(
    sqlite_poller: JobPoller,
) -> None:
    sqlite_poller.poll_function()(count_items)
    async with sqlite_poller:
        poll = await sqlite_poller.start_poll("count_items", {"count": "7", "name": "n"}, delay=60)
        stored = await sqlite_poller.get_poll(poll.id)
    assert stored.arguments == {"count": 7, "name": "n", "ratio": 0.5}


async def test_a_function_without_parameters_takes_no_arguments(
    sqlite_poller: JobPoller,
) -> None:
    sqlite_poller.poll_function()(finish)
    async with sqlite_poller:
        poll = await sqlite_poller.start_poll("finish", delay=60)
        assert poll.arguments == {}
        with pytest.raises(InvalidArgumentsError):
            await sqlite_poller.start_poll("finish", {"unexpected": 1})


def take_anything(value: Any) -> Done:
    return Done()


def take_float(value: float) -> Done:
    return Done()


@pytest.mark.parametrize(
    ("function", "value"),
    [
        pytest.param("take_anything", object(), id="object"),
        pytest.param("take_anything", b"\xff\xfe", id="undecodable-bytes"),
        pytest.param("take_float", float("nan"), id="nan"),
        pytest.param("take_float", float("inf"), id="infinity"),
    ],
)
async def test_arguments_that_cannot_be_stored_as_json_are_refused_at_submit(
    sqlite_poller: JobPoller, function: str, value: object
) -> None:
    sqlite_poller.poll_function()(take_anything)
    sqlite_poller.poll_function()(take_float)
    async with sqlite_poller:
        with pytest.raises(InvalidArgumentsError):
            await sqlite_poller.start_poll(function, {"value": value})
        assert await sqlite_poller.list_polls() == []


def positive_count(count: Annotated[int, Field(ge=1)]) -> Done:
    return Done()


def one_way_serialised(
    code: Annotated[int, PlainSerializer(lambda value: f"#{value}", return_type=str)],
) -> Done:
    return Done()


async def test_constraints_in_annotated_type_hints_are_checked_at_submit(
    sqlite_poller: JobPoller,
) -> None:
    sqlite_poller.poll_function()(positive_count)
    async with sqlite_poller:
        with pytest.raises(InvalidArgumentsError) as raised:
            await sqlite_poller.start_poll("positive_count", {"count": 0})
        assert (
            await sqlite_poller.start_poll("positive_count", {"count": 1}, delay=60)
        ).arguments == {"count": 1}
    assert [(e["loc"], e["type"]) for e in raised.value.errors] == [
        (["count"], "greater_than_equal")
    ]


async def test_arguments_whose_json_form_does_not_validate_back_are_refused_at_submit(
    sqlite_poller: JobPoller,
) -> None:
    sqlite_poller.poll_function()(one_way_serialised)
    async with sqlite_poller:
        with pytest.raises(InvalidArgumentsError):
            await sqlite_poller.start_poll("one_way_serialised", {"code": 5})
        assert await sqlite_poller.list_polls() == []


async def test_invalid_poll_options_fail_at_submit(sqlite_poller: JobPoller) -> None:
    sqlite_poller.poll_function()(finish)
    async with sqlite_poller:
        for options in ({"interval": 0}, {"max_attempts": 0}, {"backoff_factor": 0.5}):
            with pytest.raises(InvalidArgumentsError, match="options"):
                await sqlite_poller.start_poll("finish", **options)
        with pytest.raises(InvalidArgumentsError, match="options"):
            await sqlite_poller.start_poll("finish", intervall=5)
        assert await sqlite_poller.list_polls() == []


async def test_a_poll_id_with_surrounding_spaces_or_too_long_is_refused(
    sqlite_poller: JobPoller,
) -> None:
    sqlite_poller.poll_function()(finish)
    async with sqlite_poller:
        for poll_id in ("", " padded", "x" * 192):
            with pytest.raises(InvalidArgumentsError, match="poll id"):
                await sqlite_poller.start_poll("finish", poll_id=poll_id)
        assert (await sqlite_poller.start_poll("finish", poll_id="x" * 191, delay=60)).id == (
            "x" * 191
        )


# -- typed arguments round-trip through the database ---------------------------------


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Target(BaseModel):
    url: str
    retries: int = 3
    checked_at: datetime | None = None


async def test_typed_arguments_arrive_in_the_function_as_their_types(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    seen: dict[str, Any] = {}

    @poller.poll_function()
    def inspect_types(
        when: datetime,
        day: date,
        target: Target,
        targets: list[Target],
        request_id: uuid.UUID,
        amount: Decimal,
        colour: Colour,
        pair: tuple[int, str],
        labels: set[str],
    ) -> Done:
        seen.update(locals())
        return Done(result="checked")

    when = datetime(2024, 2, 29, 23, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    request_id = uuid.uuid4()
    arguments = {
        "when": when,
        "day": date(2024, 3, 1),
        "target": Target(url="https://a.example", checked_at=when),
        "targets": [{"url": "https://b.example", "retries": "5"}],
        "request_id": str(request_id),
        "amount": Decimal("12.50"),
        "colour": "blue",
        "pair": [1, "one"],
        "labels": ["x", "y", "x"],
    }
    async with poller:
        poll = await poller.start_poll("inspect_types", arguments, interval=0.01)
        final = await poller.wait_for_poll(poll.id, timeout=10)

    assert final.state is PollState.SUCCEEDED, final.error
    # Stored as JSON ...
    assert final.arguments["when"] == "2024-02-29T23:30:15.123456+02:00"
    assert final.arguments["target"] == {
        "url": "https://a.example",
        "retries": 3,
        "checked_at": "2024-02-29T23:30:15.123456+02:00",
    }
    assert final.arguments["request_id"] == str(request_id)
    # ... and handed to the function typed.
    assert seen["when"] == when
    assert seen["when"].utcoffset() == timedelta(hours=2)
    assert seen["when"].astimezone(UTC) == when.astimezone(UTC)
    assert type(seen["day"]) is date
    assert seen["day"] == date(2024, 3, 1)
    assert seen["target"] == Target(url="https://a.example", checked_at=when)
    assert seen["targets"] == [Target(url="https://b.example", retries=5)]
    assert seen["request_id"] == request_id
    assert seen["amount"] == Decimal("12.50")
    assert seen["colour"] is Colour.BLUE
    assert seen["pair"] == (1, "one")
    assert seen["labels"] == {"x", "y"}


async def test_an_async_function_gets_a_model_argument_as_the_model(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    received: list[object] = []

    @poller.poll_function()
    async def check_target(target: Target) -> Done:
        received.append(target)
        return Done(result=target.url)

    async with poller:
        poll = await poller.start_poll(
            "check_target", {"target": {"url": "https://c.example"}}, interval=0.01
        )
        final = await poller.wait_for_poll(poll.id, timeout=10)
    assert final.state is PollState.SUCCEEDED, final.error
    assert final.result == "https://c.example"
    assert received == [Target(url="https://c.example")]
