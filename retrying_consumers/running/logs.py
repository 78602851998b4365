"""Failure logging: every failed attempt is logged exactly once.

Lines are stable ``key=value`` text with the same fields in ``extra=`` for
structured handlers. A scheduled retry logs at INFO without traceback; giving up
logs at ERROR with it; a discard logs at INFO.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.policy import Action, Decision
from ..models import TaskRecord

logger = logging.getLogger("retrying_consumers.tasks")


def task_fields(task: TaskRecord) -> dict[str, Any]:
    """The fields every task log line carries."""
    return {
        "task_id": str(task.id),
        "channel": task.channel,
        "task_type": task.type,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
    }


def log_failure(task: TaskRecord, error: BaseException, decision: Decision) -> None:
    """Log the failed attempt of ``task`` (already stored) and what follows."""
    fields = task_fields(task)
    fields["error_class"] = type(error).__qualname__
    fields["error_message"] = str(error)
    fields["outcome"] = decision.action.value
    next_at = (
        task.due_at.isoformat()
        if decision.action is Action.RETRY and task.due_at
        else None
    )
    fields["next_attempt_at"] = next_at
    args = (
        fields["task_id"],
        task.channel,
        task.type,
        task.attempt,
        task.max_attempts,
        fields["error_class"],
        str(error),
    )
    base = "task_id=%s channel=%s type=%s attempt=%s/%s error=%s: %s"
    if decision.action is Action.RETRY:
        logger.info(
            "attempt failed, retrying: " + base + " next_attempt_at=%s reason=%s",
            *args,
            next_at,
            decision.reason,
            extra=fields,
        )
    elif decision.action is Action.GIVE_UP:
        logger.error(
            "task dead: " + base + " gave_up=%s",
            *args,
            decision.reason,
            exc_info=(type(error), error, error.__traceback__),
            extra=fields,
        )
    else:
        logger.info(
            "task discarded: " + base + " reason=%s",
            *args,
            decision.reason,
            extra=fields,
        )
