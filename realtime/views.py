"""The dashboard page, the task page and the staff actions."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from realtime import bulk, live, queries, task_page
from realtime.examples import EXAMPLES, EXAMPLES_CHANNEL
from realtime.permissions import ACTION_PERMISSIONS, check_action, may_see_all
from retrying_consumers import TaskNotFound, enqueue
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.ops import audit

staff_required = user_passes_test(lambda user: user.is_staff)


def list_params(query: Any) -> dict[str, Any]:
    """The task list's filter, order and page, read from a query string."""
    status = query.get("status", "")
    sort = query.get("sort", "created")
    return {
        "status": status if status in Status.values else "",
        "channel": query.get("channel", "")[:100],
        "q": query.get("q", "")[:200],
        "error": query.get("error", "")[:200],
        "sort": sort if sort in queries.SORTS else "created",
        "dir": "asc" if query.get("dir") == "asc" else "desc",
        "page": _positive(query.get("page"), 1),
        "per": _positive(query.get("per"), queries.PAGE_SIZE),
    }


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Counters, chart, backlog, workers and a page of the task list, kept live
    by a script."""
    params = list_params(request.GET)
    page = queries.task_page(
        request.user,
        params["status"],
        params["channel"],
        params["q"],
        sort=params["sort"],
        descending=params["dir"] == "desc",
        number=params["page"],
        size=params["per"],
        error_class=params["error"],
    )
    scope = "all" if may_see_all(request.user) else "mine"
    filters = {key: params[key] for key in ("status", "channel", "q", "error")}
    context = {
        "page": page,
        "tasks": page.tasks,
        "filters": filters,
        "params": params,
        "sorts": SORT_LABELS,
        "page_sizes": queries.PAGE_SIZES,
        "statuses": Status.choices,
        "channels": queries.channels_in_use(request.user),
        "stats": queries.stats(request.user, scope),
        "failures": queries.failure_groups(request.user),
        "bulk": {action: bulk.allowed(request.user, action) for action in bulk.ACTIONS},
        "examples": EXAMPLES,
        "scope": scope,
        "list_query": urlencode({k: v for k, v in params.items() if v and k != "page"}),
        "page_config": {
            "page": "dashboard",
            "scope": scope,
            "urls": {
                "detail": reverse("task-detail", args=[uuid.UUID(int=0)]),
                "action": reverse("task-action", args=[uuid.UUID(int=0), "ACTION"]),
                "chart": reverse("chart"),
                "login": reverse("login"),
            },
            "filters": filters,
            "sort": params["sort"],
            "dir": params["dir"],
            "number": page.number,
            "size": page.size,
            "total": page.total,
            "loaded_at": timezone.now().isoformat(),
        },
    }
    return render(request, "realtime/dashboard.html", context)


SORT_LABELS = {
    "created": "created",
    "finished": "finished",
    "duration": "duration",
    "next": "next try",
}


@login_required
def chart(request: HttpRequest) -> JsonResponse:
    """The throughput chart's series over ``?range=`` (5m, hour or day)."""
    span = request.GET.get("range", "5m")
    tasks = queries.visible_tasks(request.user)
    return JsonResponse(queries.throughput(tasks, span))


@login_required
def bulk_action(request: HttpRequest, action: str) -> HttpResponse:
    """Retry, cancel or delete everything matching the list's filter.

    GET (or a POST without ``confirm``) shows how many tasks it would touch and
    asks for confirmation; a POST with ``confirm`` does it.
    """
    if action not in bulk.ACTIONS:
        raise Http404("unknown action")
    if not bulk.allowed(request.user, action):
        return HttpResponseForbidden("You may not do this.")
    source = request.POST if request.method == "POST" else request.GET
    params = list_params(source)
    filters = {key: params[key] for key in ("status", "channel", "q", "error")}
    back = (
        reverse("dashboard") + "?" + urlencode({k: v for k, v in filters.items() if v})
    )
    if request.method == "POST" and source.get("confirm") == "yes":
        outcome = bulk.run(request.user, action, filters)
        messages.success(request, f"{outcome}.")
        return HttpResponseRedirect(back)
    context = {
        "action": action,
        "count": bulk.count(request.user, action, filters),
        "filters": filters,
        "acts_on": bulk.ACTS_ON[action],
        "back": back,
    }
    return render(request, "realtime/bulk_confirm.html", context)


def _positive(value: Any, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


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
    live.announce_ids([task_id])
    messages.success(request, f"Started {EXAMPLES[kind]['label']} ({task_id}).")
    return _back(request)


@require_POST
@login_required
@staff_required
def task_action(request: HttpRequest, task_id: uuid.UUID, action: str) -> HttpResponse:
    """Retry now, cancel or delete a task, with the admin's permissions.

    Answers the page's script (``X-Requested-With: fetch``) with JSON, so that
    the page stays put; a plain form post is redirected back with a message.
    Each action is recorded in the task's audit trail and announced to every
    open page (see :mod:`retrying_consumers.audit`).
    """
    if action not in ACTION_PERMISSIONS:
        raise Http404("unknown action")
    check_action(request.user, action)
    fetched = request.headers.get("X-Requested-With") == "fetch"
    by = audit.Actor.of(request.user, "page")
    try:
        if action == "retry":
            audit.retry_now(task_id, by)
            text = f"Task {task_id} will run now."
        elif action == "cancel":
            audit.cancel(task_id, by)
            text = f"Task {task_id} cancelled."
        else:
            audit.delete(task_id, by)
            text = f"Task {task_id} deleted."
    except TaskNotFound:
        raise Http404("no such task") from None
    except ValueError as err:
        if fetched:
            return JsonResponse({"ok": False, "message": str(err)}, status=409)
        messages.error(request, str(err))
        return _back(request)
    if fetched:
        return JsonResponse({"ok": True, "message": text})
    messages.success(request, text)
    if action == "delete":
        return HttpResponseRedirect(reverse("dashboard"))
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
