"""The checks of ``ChannelsBackend``'s settings and of each task's options.

``TASKS[alias]["QUEUES"]`` are channel names and ``OPTIONS`` holds only
``MAX_ATTEMPTS``, ``BACKOFF`` and ``EAGER``, each of its kind; a task's queue,
``run_after`` and retry options are checked as ``enqueue`` checks them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.tasks.exceptions import InvalidTaskBackend
from django.utils.module_loading import import_string

from ..core.exceptions import InvalidArgument
from ..core.payload import shown
from ..producing.validation import CHANNEL_NAME, utc_run_after, validate_max_attempts

#: A task's ``backoff``: (exception, task result) -> seconds, or None.
Backoff = Callable[..., float | timedelta | None]

OPTIONS = ("MAX_ATTEMPTS", "BACKOFF", "EAGER")


def queue_problem(queue_name: Any) -> str | None:
    if isinstance(queue_name, str) and CHANNEL_NAME.fullmatch(queue_name):
        return None
    return (
        f"queue_name {shown(queue_name)} is not a channel name (ASCII letters, "
        "digits, '-', '_' and '.', under 100 characters)."
    )


def run_after_problem(run_after: Any) -> str | None:
    if run_after is None:
        return None
    if not isinstance(run_after, datetime):
        return f"run_after must be an aware datetime, got {shown(run_after)}."
    try:
        utc_run_after(run_after)
    except InvalidArgument as err:
        return f"run_after {err.problem}."
    return None


def retry_problem(
    max_attempts: Any,
    backoff: Any,
    names: tuple[str, str] = ("max_attempts", "backoff"),
) -> str | None:
    try:
        validate_max_attempts(max_attempts)
    except InvalidArgument as err:
        return f"{names[0]} {err.problem}."
    if backoff is not None and not callable(backoff):
        return (
            f"{names[1]} must be a callable (exception, task_result) -> "
            f"seconds or None, got {backoff!r}."
        )
    return None


def check_queues(alias: str, queues: Any) -> None:
    """Raise InvalidTaskBackend unless QUEUES is a list of channel names.

    An empty list is valid: Django documents it as "any queue name".
    """
    where = f"TASKS[{alias!r}]['QUEUES']"
    if not isinstance(queues, list | tuple | set | frozenset):
        raise InvalidTaskBackend(
            f"{where} must be a list of channel names, got {shown(queues)}."
        )
    bad = sorted(shown(q) for q in queues if queue_problem(q))
    if bad:
        raise InvalidTaskBackend(
            f"{where}: {', '.join(bad)} are not channel names (ASCII "
            "letters, digits, '-', '_' and '.', under 100 characters)."
        )


def eager_option(alias: str, options: Any) -> bool:
    """``OPTIONS['EAGER']``: True or False (the default)."""
    eager = options.get("EAGER", False)
    if not isinstance(eager, bool):
        raise InvalidTaskBackend(
            f"TASKS[{alias!r}]['OPTIONS']['EAGER'] must be True or False, "
            f"got {eager!r}."
        )
    return eager


def backend_options(alias: str, options: Any) -> tuple[int | None, Backoff | None]:
    """Check OPTIONS; return the default max_attempts and backoff."""
    where = f"TASKS[{alias!r}]"
    if not isinstance(options, Mapping) or set(options) - set(OPTIONS):
        raise InvalidTaskBackend(
            f"{where}['OPTIONS'] may only have {', '.join(OPTIONS)}, got {options!r}."
        )
    backoff = options.get("BACKOFF")
    if isinstance(backoff, str):
        try:
            backoff = import_string(backoff)
        except ImportError as err:
            raise InvalidTaskBackend(f"{where}['OPTIONS']['BACKOFF']: {err}") from err
    max_attempts = options.get("MAX_ATTEMPTS")
    names = (f"{where}['OPTIONS']['MAX_ATTEMPTS']", f"{where}['OPTIONS']['BACKOFF']")
    problem = retry_problem(max_attempts, backoff, names)
    if problem:
        raise InvalidTaskBackend(problem)
    return max_attempts, backoff
