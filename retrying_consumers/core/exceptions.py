"""Exceptions raised by, and raised into, the retry layer.

Every exception defined here derives from :class:`RetryingConsumersError`.
Configuration mistakes also derive from Django's ``ImproperlyConfigured`` so that
they surface the way Django users expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured


class RetryingConsumersError(Exception):
    """Root of every exception of the retry layer."""


class ConfigurationError(RetryingConsumersError, ImproperlyConfigured):
    """A consumer, policy or setting is configured wrongly."""


class InvalidPolicy(ConfigurationError, ValueError):
    """A :class:`~retrying_consumers.policy.RetryPolicy` was given bad arguments."""


class InvalidPayload(RetryingConsumersError, ValueError):
    """A payload cannot travel through the channel layer or the store.

    ``path`` names the offending value, for example ``payload["items"][3]``.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class InvalidArgument(RetryingConsumersError, ValueError):
    """An argument of ``enqueue`` other than the payload cannot be used.

    ``argument`` names it, for example ``idempotency_key``; ``problem`` says why.
    """

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}")


class IdempotencyConflict(InvalidArgument):
    """An ``idempotency_key`` is already held by a task of other work.

    ``key`` is the key, ``task_id`` the task that holds it (unfinished or
    succeeded) and ``differs`` what differs: ``"channel"``, ``"type"`` and/or
    ``"payload"``.
    """

    def __init__(self, key: str, task_id: Any, differs: Sequence[str]) -> None:
        self.key = key
        self.task_id = task_id
        self.differs = tuple(differs)
        super().__init__(
            "idempotency_key",
            f"{key!r} is already held by task {task_id}, which has another "
            f"{' and '.join(self.differs)}; enqueue the same channel, type and "
            "payload to get that task back, or use another key",
        )


class TaskNotFound(RetryingConsumersError, LookupError):
    """No task record has the given id."""


class GiveUp(RetryingConsumersError):
    """Raised by a handler to end its task as dead at once, without retrying."""


class RetryLater(RetryingConsumersError):
    """Raised by a handler to ask for another attempt after ``delay`` seconds.

    The attempt still counts towards ``max_attempts``: when none is left, the task
    ends dead.
    """

    def __init__(self, delay: float | timedelta, reason: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"RetryLater delay must be >= 0 seconds, got {delay!r}")
        self.delay = float(seconds)
        self.reason = reason
        super().__init__(reason or f"retry requested in {self.delay:g} s")


class AttemptTimedOut(RetryingConsumersError):
    """An attempt ran past its policy's ``time_limit`` (reason "timed out")."""


class WorkerLost(RetryingConsumersError):
    """The worker running an attempt stopped renewing its lease ("worker lost")."""


class AttemptInterrupted(RetryingConsumersError):
    """A worker shutting down ended the attempt before it finished."""


class AttemptCancelled(RetryingConsumersError):
    """The attempt was stopped because its task was cancelled while it ran, or
    its lease was lost; the store already holds the task's outcome."""


# Tracebacks, pickles and the exception paths of django.tasks results name these
# classes by the path users import them from, retrying_consumers.exceptions (an
# alias of this module, see retrying_consumers._moved), as before the move.
for _class in list(globals().values()):
    if isinstance(_class, type) and _class.__module__ == __name__:
        _class.__module__ = "retrying_consumers.exceptions"
del _class
