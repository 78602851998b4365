"""The dashboard page, the task page and the staff actions."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from realtime import queries, task_page
from realtime.examples import EXAMPLES, EXAMPLES_CHANNEL
from realtime.permissions import ACTION_PERMISSIONS, check_action, may_see_all
from retrying_consumers import TaskNotFound, audit, enqueue
from retrying_consumers.models import Status, TaskRecord

staff_required = user_passes_test(lambda user: user.is_staff)


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Counters, chart, backlog, workers and the task list, kept live by a script."""
    status = request.GET.get("status", "")
    status = status if status in Status.values else ""
    channel = request.GET.get("channel", "")[:100]
    text = request.GET.get("q", "")[:200]
    tasks = queries.filtered_tasks(request.user, status, channel, text)
    scope = "all" if may_see_all(request.user) else "mine"
    context = {
        "tasks": tasks[: queries.LIST_LIMIT],
        "filters": {"status": status, "channel": channel, "q": text},
        "statuses": Status.choices,
        "channels": queries.channels_in_use(request.user),
        "stats": queries.stats(request.user, scope),
        "examples": EXAMPLES,
        "scope": scope,
    }
    return render(request, "realtime/dashboard.html", context)


@login_required
def task_detail(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    """One task: payload, times, every attempt's error and traceback, result."""
    task = task_page.visible_task(request, task_id)
    return render(request, "realtime/task_detail.html", task_page.context(task))


@require_POST
@login_required
@staff_required
def start_example(request: HttpRequest) -> HttpResponse:
    """Enqueue one of the example tasks, owned by the person who asked."""
    kind = request.POST.get("example", "")
    if kind not in EXAMPLES:
        messages.error(request, f"Unknown example {kind!r}.")
        return _back(request)
    task_id = enqueue(
        EXAMPLES_CHANNEL,
        f"example.{kind}",
        EXAMPLES[kind]["payload"],
        user=request.user,
    )
    messages.success(request, f"Started {EXAMPLES[kind]['label']} ({task_id}).")
    return _back(request)


@require_POST
@login_required
@staff_required
def task_action(request: HttpRequest, task_id: uuid.UUID, action: str) -> HttpResponse:
    """Retry now, cancel or delete a task (with the admin's permissions)."""
    if action not in ACTION_PERMISSIONS:
        raise Http404("unknown action")
    check_action(request.user, action)
    try:
        if action == "retry":
            audit.retry_now(task_id, audit.Actor.of(request.user, "page"))
            messages.success(request, f"Task {task_id} will run now.")
        elif action == "cancel":
            audit.cancel(task_id, audit.Actor.of(request.user, "page"))
            messages.success(request, f"Task {task_id} cancelled.")
        elif action == "delete":
            audit.delete(task_id, audit.Actor.of(request.user, "page"))
            messages.success(request, f"Task {task_id} deleted.")
            return HttpResponseRedirect(reverse("dashboard"))
    except TaskNotFound:
        raise Http404("no such task") from None
    except ValueError as err:
        messages.error(request, str(err))
    return _back(request)


def _visible_task(request: HttpRequest, task_id: uuid.UUID) -> TaskRecord:
    try:
        return queries.visible_tasks(request.user).get(pk=task_id)
    except TaskRecord.DoesNotExist:
        raise Http404("no such task") from None


def _back(request: HttpRequest) -> HttpResponse:
    target: Any = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, {request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("dashboard")
    return HttpResponseRedirect(target)
