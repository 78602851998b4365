"""``{% task_progress task_id %}``: a task's progress bar for any page.

The element shows the task as the store has it when the page renders (that is
all a browser without JavaScript gets), and ``realtime/task-progress.js`` keeps
it live over ``/ws/tasks/``. Quick start and the client's API:
docs/progress-widget.md.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from django import template
from django.templatetags.static import static
from django.utils import timezone
from django.utils.html import format_html

from realtime import queries
from retrying_consumers.models import Status, TaskRecord

register = template.Library()

#: What a person reads for each status; the script uses the same words.
LABELS = {
    "queued": "Waiting to start",
    "running": "Running",
    "retrying": "Waiting to retry",
    "succeeded": "Done",
    "dead": "Failed",
    "cancelled": "Cancelled",
    "unavailable": "Not available",
}


@register.inclusion_tag("realtime/widgets/task_progress.html", takes_context=True)
def task_progress(
    context: template.Context,
    task: Any,
    label: str = "Task progress",
    ws_url: str = "",
) -> dict[str, Any]:
    """A progress element for ``task`` (a task id, or anything with an ``id``,
    such as a ``django.tasks`` result), for the user of the request rendering it.

    A task the user may not see (another user's, or none at all) renders the
    same "not available" element, with no id for the script to watch.
    """
    found = visible_task(_user(context), task)
    return {
        "progress": progress_state(found),
        "label": label,
        "ws_url": ws_url,
    }


@register.simple_tag
def task_progress_assets() -> str:
    """The widget's stylesheet and script, for the page's ``<head>``."""
    return format_html(
        '<link rel="stylesheet" href="{}">\n<script src="{}" defer></script>',
        static("realtime/task-progress.css"),
        static("realtime/task-progress.js"),
    )


def visible_task(user: Any, task: Any) -> TaskRecord | None:
    """The task with ``task``'s id if ``user`` may see it, else None."""
    if user is None or not user.is_authenticated:
        return None  # ownerless tasks must not match an anonymous user's None
    task_id = _task_id(task)
    if task_id is None:
        return None
    return queries.visible_tasks(user).filter(pk=task_id).first()


def progress_state(task: TaskRecord | None) -> dict[str, Any]:
    """What the element shows for ``task`` now (None: not available)."""
    if task is None:
        return {"status": "unavailable", "label": LABELS["unavailable"], "percent": 0}
    percent = _percent(task)
    retry_in = None
    if task.status == Status.RETRYING and task.due_at is not None:
        seconds = (task.due_at - timezone.now()).total_seconds()
        retry_in = max(0, math.ceil(seconds))
    error = f"{task.error_class}: {task.error_message}" if task.error_class else ""
    return {
        "id": str(task.pk),
        "status": task.status,
        "label": LABELS.get(task.status, task.status),
        "percent": percent,
        "value_text": _value_text(task, percent),
        "message": task.progress_message,
        "attempt": _attempt_text(task),
        "retry_at": task.due_at.isoformat() if retry_in is not None else "",
        "retry_in": retry_in,
        "error": error if task.status in (Status.DEAD, Status.RETRYING) else "",
    }


def _user(context: template.Context) -> Any:
    request = context.get("request")
    return getattr(request, "user", None) or context.get("user")


def _task_id(task: Any) -> uuid.UUID | None:
    value = getattr(task, "id", task)
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _percent(task: TaskRecord) -> int | None:
    """Whole percent done, or None when the task gave no total."""
    if task.status == Status.SUCCEEDED:
        return 100
    total, current = task.progress_total, task.progress_current
    if not total or total <= 0 or current is None:
        return None if task.status == Status.RUNNING else 0
    return max(0, min(100, math.floor(100 * current / total)))


def _value_text(task: TaskRecord, percent: int | None) -> str:
    if percent is None:
        return task.progress_message or LABELS.get(task.status, task.status)
    text = f"{percent}%"
    return f"{text}, {task.progress_message}" if task.progress_message else text


def _attempt_text(task: TaskRecord) -> str:
    if not task.attempt:
        return ""
    of = f" of {task.max_attempts}" if task.max_attempts else ""
    return f"attempt {task.attempt}{of}"
