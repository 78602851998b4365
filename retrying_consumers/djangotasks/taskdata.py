"""Django tasks' data as the store keeps it: JSON-safe arguments and results,
and the errors of failed attempts as Django's ``TaskError``."""

from __future__ import annotations

import builtins
import re
from typing import Any

from django.tasks.base import TaskError
from django.utils.json import normalize_json

from ..core import exceptions
from ..core.exceptions import InvalidPayload
from ..core.payload import check_nesting, validate_payload
from ..models import AttemptRecord


class InvalidTaskData(InvalidPayload, TypeError):
    """Task arguments or a return value that cannot round-trip through JSON.

    A ``TypeError``, as Django documents for such arguments, that names the
    offending value, e.g. ``task['args'][0]: datetime is not msgpack/JSON safe``.
    """


def task_error(attempt: AttemptRecord) -> TaskError:
    """Django's view of a failed attempt: the exception's class path, traceback."""
    return TaskError(
        exception_class_path=exception_path(attempt.error_class, attempt.traceback),
        traceback=attempt.traceback
        or f"{attempt.error_class}: {attempt.error_message}\n",
    )


def exception_path(name: str, traceback: str) -> str:
    """The import path of exception class ``name`` (a qualname) from its traceback.

    The store keeps the class's qualname; the last line of a traceback names the
    class with its module (except for built-ins), as ``pkg.mod.Name: message``.
    """
    header = re.compile(rf"^(?:([\w.]+)\.)?{re.escape(name)}(?::|$)", re.MULTILINE)
    modules = [match.group(1) for match in header.finditer(traceback)]
    if modules and modules[-1]:
        return f"{modules[-1]}.{name}"
    for module in (builtins, exceptions):
        if isinstance(found := getattr(module, name, None), type):
            return f"{found.__module__}.{name}"
    return name


def json_safe(
    values: dict[str, Any], *, max_bytes: int | None = None
) -> dict[str, Any]:
    """``values`` as a JSON round trip gives them back (tuples become lists).

    Raises :class:`InvalidTaskData` naming what JSON cannot carry, e.g.
    ``task['args'][0]``, or (with ``max_bytes``) that it is too big.
    """
    try:
        # normalize_json recurses: bound its depth and its work first.
        check_nesting(values, "task", max_bytes)
        try:
            values = normalize_json(values)
        except (TypeError, ValueError):
            values = _lists(values)  # validate_payload names the offending part
        validate_payload(values, "task", max_bytes=max_bytes)
    except InvalidPayload as err:
        raise InvalidTaskData(err.path, err.problem) from None
    return values


def _lists(value: Any) -> Any:
    """Tuples as lists, at any depth: what they become after a JSON round trip."""
    if isinstance(value, tuple | list):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value
