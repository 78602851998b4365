"""The task page's content, and the fragment of it that its script patches in.

The page and the fragment render one template (``realtime/_task_live.html``), so
what the script patches in after an event is exactly what a reload would show:
status, attempts with their errors and tracebacks, times, result, reason and
who acted on the task.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from realtime import queries
from retrying_consumers.models import TaskRecord
from retrying_consumers.ops import audit


def visible_task(request: HttpRequest, task_id: uuid.UUID) -> TaskRecord:
    """The task, if the signed-in user may see it; else 404 (no probing)."""
    try:
        return queries.visible_tasks(request.user).get(pk=task_id)
    except TaskRecord.DoesNotExist:
        raise Http404("no such task") from None


def context(task: TaskRecord) -> dict[str, Any]:
    """What ``realtime/_task_live.html`` shows of ``task``."""
    attempts = list(queries.attempts_of(task))
    return {
        "task": task,
        "attempts": attempts,
        "payload": json.dumps(task.payload, indent=2, sort_keys=True),
        "result": json.dumps(task.result, indent=2, sort_keys=True),
        "trail": list(audit.trail(task.pk)),
        "parent_is_task": task.parent_id is not None
        and TaskRecord.objects.filter(pk=task.parent_id).exists(),
        "children": list(
            TaskRecord.objects.filter(parent_id=task.pk)
            .order_by("created_at")
            .values("pk", "type", "status")
        ),
    }


@require_GET
@never_cache
@login_required
def task_live(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    """The live part of a task's page, for its script to patch in place."""
    task = visible_task(request, task_id)
    return render(request, "realtime/_task_live.html", context(task))
