"""Functions registered by a stable name, with their argument schemas.

The database stores a function's *name* and JSON arguments, never code: a row can only
ever make the process call something its code registered.
"""

import importlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PydanticUserError,
    ValidationError,
    create_model,
)

from .._storage.tables import ID_LENGTH
from ..exceptions import ConfigurationError, FunctionNotFoundError, InvalidArgumentsError

__all__ = ["FunctionKind", "Registry", "RegisteredFunction"]

FunctionKind = Literal["poll", "job", "callback"]
Executor = Literal["thread", "process"]


@dataclass(frozen=True, slots=True)
class RegisteredFunction:
    """A function the engine may call, and how to call it."""

    name: str
    kind: FunctionKind
    func: Callable[..., Any]
    is_async: bool
    executor: Executor
    max_concurrency: int | None
    arguments_model: type[BaseModel]
    # Parameter name -> the JSON types its validation returns unchanged (None: any);
    # None when some parameter needs real validation (see `_plain_parameters`).
    plain_parameters: dict[str, tuple[type, ...] | None] | None = None

    def validate_arguments(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check `arguments` against the signature and return their JSON form.

        Raises:
            InvalidArgumentsError: The arguments do not fit, or are not JSON-serialisable.
        """
        try:
            model = self.arguments_model.model_validate(dict(arguments or {}))
            dumped: dict[str, Any] = model.model_dump(mode="json")
            # NaN and infinities are not JSON: PostgreSQL and MySQL refuse them. Nor can
            # any database store a lone surrogate ("\ud800") as UTF-8.
            json.dumps(dumped, allow_nan=False, ensure_ascii=False).encode()
            # What is stored must bind back at attempt time (a one-way serialiser may write
            # a form its type refuses), or every attempt of the poll would fail; and bind
            # back to the same values: a datetime, set or Decimal inside a `dict` or `Any`
            # parameter would come back as text or a list, a NaN as None.
            returned = self.arguments_model.model_validate(dumped)
            _same_after_storage(model, returned)
        except ValidationError as exc:
            errors: list[dict[str, object]] = []
            messages: list[str] = []
            for err in exc.errors(include_url=False, include_input=False):
                location = ".".join(map(str, err["loc"])) or "(root)"
                errors.append({"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]})
                messages.append(f"{location}: {err['msg']}")
            raise InvalidArgumentsError(
                f"arguments do not fit {self.kind} function {self.name!r}: " + "; ".join(messages),
                errors=errors,
            ) from None
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentsError(
                f"arguments of {self.name!r} are not JSON-serialisable: {exc}"
            ) from None
        return dumped

    def bind_arguments(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Turn stored JSON arguments back into the typed keyword arguments of a call."""
        plain = self.plain_parameters
        if plain is not None and len(stored) == len(plain):
            # Every parameter is a str, int, bool, None or Any that validation would return
            # as it is: skip building a model per attempt when the values have those types.
            for name, kinds in plain.items():
                if name not in stored or (kinds is not None and type(stored[name]) not in kinds):
                    break
            else:
                return dict(stored)
        model = self.arguments_model.model_validate(dict(stored))
        return {name: getattr(model, name) for name in type(model).model_fields}


def _json_object(arguments: dict[str, Any]) -> dict[str, Any]:
    """Return `arguments` if they come back equal from JSON; the worker checks the rest."""
    try:
        text = json.dumps(arguments, allow_nan=False, ensure_ascii=False)
        text.encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentsError(f"arguments are not JSON: {exc}") from None
    if not _equal(arguments, json.loads(text)):
        raise InvalidArgumentsError(
            "arguments must come back equal from JSON (no tuples, sets, dates or bytes): "
            "the function is registered in another process, which checks them by its "
            "signature when it runs"
        )
    return arguments


def _same_after_storage(given: BaseModel, returned: BaseModel) -> None:
    for field in type(given).model_fields:
        before, after = getattr(given, field), getattr(returned, field)
        if not _equal(before, after):
            raise ValueError(
                f"argument {field!r} would not come back as given from its JSON form "
                f"({_shown(before)} would come back as {_shown(after)}): pass JSON values "
                "(str, int, float, bool, None, lists, dicts with str keys), or give the "
                "parameter a type that converts it (e.g. datetime)"
            )


def _equal(before: Any, after: Any) -> bool:
    """Equal, with the same types all the way down (True is not 1 here; NaN equals nothing)."""
    if type(before) is not type(after):
        return False
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(_equal(before[k], after[k]) for k in before)
    if isinstance(before, list | tuple):
        return len(before) == len(after) and all(map(_equal, before, after))
    return bool(before == after)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number here; give the number")
    return value


def _is_number(annotation: Any) -> bool:
    """An `int` or `float` parameter, optional or not: it refuses true and false, which
    pydantic would read as 1 and 0."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return False
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    return len(kinds) == 1 and kinds[0] in (int, float)


def _arguments_model(name: str, func: Callable[..., Any]) -> type[BaseModel]:
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # unresolved forward reference, etc.
        raise ConfigurationError(f"cannot read the type hints of {name!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigurationError(
                f"{name!r}: *args and **kwargs cannot be validated; name every parameter"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ConfigurationError(
                f"{name!r}: positional-only parameters cannot be passed by name"
            )
        annotation = hints.get(parameter.name, Any)
        if _is_number(annotation):
            annotation = Annotated[annotation, BeforeValidator(_refuse_bool)]
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model_name = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    try:
        return create_model(
            f"{model_name or 'Function'}Arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except PydanticUserError as exc:  # a parameter type pydantic cannot validate
        raise ConfigurationError(
            f"{name!r}: its parameters must have JSON-compatible types: {exc}"
        ) from None


_PLAIN_TYPES: tuple[type, ...] = (str, int, bool, type(None))


def _plain_parameters(func: Callable[..., Any]) -> dict[str, tuple[type, ...] | None] | None:
    """Return each parameter's JSON types that validation leaves unchanged, if all have some.

    `str`, `int`, `bool`, `None`, unions of them and `Any` qualify; anything else
    (floats, which JSON may hand back as ints, containers, models, constraints) does not.
    """
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:
        return None
    plain: dict[str, tuple[type, ...] | None] = {}
    for parameter in inspect.signature(func).parameters.values():
        annotation = hints.get(parameter.name, Any)
        if annotation is Any:
            plain[parameter.name] = None
            continue
        members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
        kinds = tuple(type(None) if member is None else member for member in members)
        if not kinds or not all(kind in _PLAIN_TYPES for kind in kinds):
            return None
        plain[parameter.name] = kinds
    return plain


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is typing.Union or origin is types.UnionType


def _check_importable(name: str, func: Callable[..., Any]) -> None:
    """Refuse functions a process pool cannot import by name in a spawned child."""
    module_name = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        raise ConfigurationError(
            f"{name!r} runs in a process pool, so it must be a module-level function "
            "importable by its module and name (not a lambda, a nested function or "
            "one defined in __main__)"
        )
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if target is not func:
        raise ConfigurationError(f"{name!r} is not importable as {module_name}:{qualname}")


class Registry:
    """Name → function, one namespace per kind (poll, job, callback)."""

    def __init__(self) -> None:
        self._functions: dict[tuple[FunctionKind, str], RegisteredFunction] = {}
        # Names that live engine processes register, from the worker registry: a client
        # accepts work for them (refreshed at every heartbeat).
        self.elsewhere: dict[str, set[str]] = {}

    def register(
        self,
        kind: FunctionKind,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        executor: Executor = "thread",
        max_concurrency: int | None = None,
    ) -> RegisteredFunction:
        """Register `func` under `name` (default: its `__name__`).

        Raises:
            ConfigurationError: The name is taken or invalid, or the function cannot run
                as asked.
        """
        if not callable(func):
            raise ConfigurationError(f"{func!r} is not callable")
        name = name or getattr(func, "__name__", "")
        if name == "<lambda>":
            raise ConfigurationError(
                "a lambda cannot be registered under its own name: each poll and job stores "
                "its function's name, and a lambda has none; define it with `def`, or give "
                "name=..."
            )
        if not name or len(name) > ID_LENGTH:
            raise ConfigurationError(f"give the function a name of 1 to {ID_LENGTH} characters")
        if (kind, name) in self._functions:
            raise ConfigurationError(f"a {kind} function named {name!r} is registered already")
        if executor not in ("thread", "process"):
            raise ConfigurationError(f"executor must be 'thread' or 'process', not {executor!r}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        is_async = inspect.iscoroutinefunction(func)
        if executor == "process":
            if is_async:
                raise ConfigurationError(f"{name!r}: async functions run on the event loop")
            _check_importable(name, func)
        registered = RegisteredFunction(
            name=name,
            kind=kind,
            func=func,
            is_async=is_async,
            executor=executor,
            max_concurrency=max_concurrency,
            arguments_model=_arguments_model(name, func),
            plain_parameters=_plain_parameters(func),
        )
        self._functions[(kind, name)] = registered
        return registered

    def get(self, kind: FunctionKind, name: str) -> RegisteredFunction:
        """Return the function of that kind and name.

        Raises:
            FunctionNotFoundError: Nothing of that kind is registered under the name.
        """
        try:
            return self._functions[(kind, name)]
        except KeyError:
            raise FunctionNotFoundError(f"no {kind} function is registered as {name!r}") from None

    def stored_arguments(
        self, kind: FunctionKind, name: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Return `arguments` as they are stored, checked against this process's function,
        or, if only a live worker registers it, checked as JSON alone.

        Raises:
            FunctionNotFoundError: Neither this process nor a live worker registers it.
            InvalidArgumentsError: The arguments do not fit or are not JSON.
        """
        if (kind, name) in self._functions:
            return self._functions[(kind, name)].validate_arguments(arguments)
        self.require_known(kind, name)
        return _json_object(dict(arguments or {}))

    def is_known(self, kind: FunctionKind, name: str) -> bool:
        """Return whether this process or a live worker (at the last look) registers it."""
        return (kind, name) in self._functions or name in self.elsewhere.get(kind, ())

    def require_known(self, kind: FunctionKind, name: str) -> None:
        """Check that this process or a live worker registers `name`.

        Raises:
            FunctionNotFoundError: Neither does.
        """
        if not self.is_known(kind, name):
            raise FunctionNotFoundError(
                f"no {kind} function is registered as {name!r}, in this process or in a live worker"
            )

    def names(self, kind: FunctionKind) -> list[str]:
        """Return the registered names of one kind, sorted."""
        return sorted(n for k, n in self._functions if k == kind)
