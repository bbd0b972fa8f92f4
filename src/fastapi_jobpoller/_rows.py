"""Stored rows as public models, even when a stored value cannot be read.

A row edited by hand or written by another version may hold, say, arguments that are
not an object. Reading it must not fail a whole page of the API: the unreadable values
are shown empty and the model's `problem` says what was stored instead.
"""

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ._rules.row_checks import describe_error

__all__ = ["read_row"]

M = TypeVar("M", bound=BaseModel)

# What an unreadable JSON column is shown as.
_EMPTY: dict[str, Any] = {"arguments": {}, "callbacks": [], "trigger": None}


def read_row(model: type[M], row: Mapping[str, Any]) -> M:
    """Return `row` as `model`; unreadable JSON columns are emptied and named in `problem`.

    Raises:
        ValidationError: A column other than the JSON ones cannot be read.
    """
    try:
        return model.model_validate(row)
    except ValidationError as error:
        broken = sorted({str(e["loc"][0]) for e in error.errors() if e["loc"]} & set(_EMPTY))
        if not broken:
            raise
        shown = dict(row)
        for name in broken:
            shown[name] = _EMPTY[name]
        unreadable = f"stored {' and '.join(broken)} cannot be read: {describe_error(error)}"
        earlier = row.get("problem")
        shown["problem"] = f"{earlier}; {unreadable}" if earlier else unreadable
        return model.model_validate(shown)
