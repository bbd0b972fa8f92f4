"""The public API is exactly what the API reference documents: `fastapi_jobpoller.__all__`
names every entry of docs/reference.md, and nothing more is exported. Every module without
an underscore is public: it declares `__all__`, and exports nothing a private one defines."""

import importlib
import pkgutil
import re
from types import ModuleType

from scripts.reference_docs import render_glance, render_page

import fastapi_jobpoller
from tests.helpers import REPOSITORY

REFERENCE = REPOSITORY / "docs" / "reference.md"
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


# Where each name of 0.1.0's `__all__` could be imported from, besides the package itself.
RELEASED_0_1_0 = {
    "config": ["JobPollerSettings"],
    "events": ["Event", "EventType", "Listener"],
    "exceptions": [
        "ConfigurationError",
        "ConflictError",
        "DatabaseUnavailableError",
        "FunctionNotFoundError",
        "InvalidArgumentsError",
        "InvalidStateError",
        "InvalidTriggerError",
        "JobConflictError",
        "JobNotFoundError",
        "JobPollerError",
        "NotRunningError",
        "PayloadTooLargeError",
        "PollConflictError",
        "PollNotFoundError",
    ],
    "lifespan": ["mount_scheduler"],
    "metrics": ["PollerMetrics"],
    "models": [
        "CronTrigger",
        "DateTrigger",
        "Health",
        "IntervalTrigger",
        "JobInfo",
        "JobRunInfo",
        "JobRunState",
        "PollAttemptInfo",
        "PollInfo",
        "PollOptions",
        "PollState",
        "Trigger",
    ],
    "outcomes": ["Done", "Failed", "Pending"],
    "poller": ["JobPoller"],
    "router": ["get_jobs_router", "jobpoller_error_handler"],
}


def public_modules() -> list[ModuleType]:
    """Every module of the package with no underscore in its dotted name but `__init__`."""
    found = [fastapi_jobpoller]
    for info in pkgutil.walk_packages(fastapi_jobpoller.__path__, "fastapi_jobpoller."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(importlib.import_module(info.name))
    return found


def test_all_keeps_every_name_of_0_1_0() -> None:
    released = {name for names in RELEASED_0_1_0.values() for name in names} - {
        "Listener",
        "PollerMetrics",
        "Trigger",
    }
    assert sorted(released - set(fastapi_jobpoller.__all__)) == []


def test_names_of_0_1_0_are_importable_from_their_0_1_0_modules() -> None:
    missing = [
        f"fastapi_jobpoller.{module}.{name}"
        for module, names in RELEASED_0_1_0.items()
        for name in names
        if not hasattr(importlib.import_module(f"fastapi_jobpoller.{module}"), name)
    ]
    assert missing == []


def test_every_public_module_declares_all_and_every_name_resolves() -> None:
    for module in public_modules():
        names = getattr(module, "__all__", None)
        assert names is not None, f"{module.__name__} has no __all__"
        assert [n for n in names if not hasattr(module, n)] == [], module.__name__
        assert [n for n in names if n.startswith("_") and n != "__version__"] == []


def test_no_public_module_exports_what_a_private_module_defines() -> None:
    """A class or function in a public `__all__` is defined in a public module, or is
    public API re-exported (a name of the package's `__all__`): a private module's helper
    never becomes public API by being imported somewhere public."""
    leaked = []
    for module in public_modules():
        for name in set(module.__all__) - set(fastapi_jobpoller.__all__):
            defined_in = getattr(getattr(module, name), "__module__", None)
            if defined_in and defined_in.startswith("fastapi_jobpoller"):
                if any(part.startswith("_") for part in defined_in.split(".")[1:]):
                    leaked.append(f"{module.__name__}.{name} (from {defined_in})")
    assert leaked == []


def test_the_at_a_glance_part_of_the_reference_is_what_the_package_says_now() -> None:
    page = REFERENCE.read_text(encoding="utf-8")
    assert render_page(page) == page, "run python scripts/reference_docs.py"


def test_the_at_a_glance_part_lists_every_public_name_and_every_poller_method() -> None:
    glance = render_glance()
    for name in fastapi_jobpoller.__all__:
        assert f"| `{name}` |" in glance, name
    methods = [n for n in dir(fastapi_jobpoller.JobPoller) if not n.startswith("_")]
    for method in methods:
        assert f"poller.{method}" in glance, method
    assert "| `await poller.start_poll(function, arguments=None, *, poll_id=None," in glance
    assert "| `poller.poll_function(name=None, *, executor='thread'," in glance
