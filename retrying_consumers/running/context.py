"""The task an attempt runs, as its handler sees it: ``self.task``,
:func:`is_cancelled`."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..messaging.revoking import is_revoked


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task a handler is running, as ``self.task`` inside the handler."""

    id: str
    channel: str
    type: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]

    @property
    def cancelled(self) -> bool:
        """Whether the task was cancelled while this attempt runs.

        A sync handler, which cannot be stopped from outside, checks it and
        returns; an async handler is cancelled where it awaits.
        """
        return is_revoked(self.id)


current_task: ContextVar[TaskContext | None] = ContextVar(
    "retrying_consumers_task", default=None
)


def is_cancelled() -> bool:
    """Whether the task whose attempt runs here (in this handler, or any
    function it calls) has been cancelled meanwhile; False outside an attempt.

    For sync code, which cannot be stopped from outside: check it and return.
    """
    context = current_task.get()
    return context is not None and context.cancelled
