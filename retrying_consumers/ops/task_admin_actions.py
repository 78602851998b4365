"""The task admin's actions and buttons: retry now, cancel, delete finished.

Each goes through the audit trail (:mod:`.audit`), recorded with the staff
member who acted; :class:`~retrying_consumers.admin.TaskRecordAdmin` has them
from :class:`TaskRecordActions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from ..core.exceptions import TaskNotFound
from ..models import ACTIVE, FINAL, Status, TaskRecord
from ..storage.store import get_task
from . import audit

RETRYABLE = (Status.QUEUED, Status.RETRYING, Status.DEAD, Status.CANCELLED)


class TaskRecordActions(admin.ModelAdmin):
    """The actions of the task list and the buttons of a task's page."""

    # Actions -------------------------------------------------------------------

    @admin.action(
        description="Retry now (re-drive dead or cancelled)", permissions=["change"]
    )
    def retry_now(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        retry = _retrier(actor(request))
        self._act(request, queryset.values_list("pk", flat=True), retry, "retried")

    @admin.action(description="Cancel unfinished tasks", permissions=["change"])
    def cancel_tasks(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> None:
        self._act(
            request,
            queryset.values_list("pk", flat=True),
            _canceller(actor(request)),
            "cancelled",
        )

    @admin.action(description="Delete selected finished tasks", permissions=["delete"])
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> HttpResponse | None:
        """Django's delete action, limited to finished tasks."""
        finished = queryset.filter(status__in=FINAL)
        skipped = queryset.exclude(status__in=FINAL).count()
        if skipped:
            self.message_user(
                request,
                f"{skipped} unfinished task(s) left alone; cancel them first.",
                messages.WARNING,
            )
        if not finished.exists():
            return None
        response: HttpResponse | None = django_delete_selected(self, request, finished)
        return response

    def _act(
        self,
        request: HttpRequest,
        task_ids: Iterable[Any],
        act: Callable[[Any], str | None],
        done_word: str,
    ) -> None:
        done, problems = 0, []
        for task_id in task_ids:
            problem = act(task_id)
            if problem is None:
                done += 1
            else:
                problems.append(problem)
        if done:
            self.message_user(request, f"{done} task(s) {done_word}.", messages.SUCCESS)
        for problem in problems[:10]:
            self.message_user(request, problem, messages.WARNING)
        if len(problems) > 10:
            self.message_user(
                request, f"... and {len(problems) - 10} more", messages.WARNING
            )

    # The task page's buttons ---------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/retry-now/",
                wrap(require_POST(self.retry_view)),
                name=f"{info}_retry_now",
            ),
            path(
                "<path:object_id>/cancel/",
                wrap(require_POST(self.cancel_view)),
                name=f"{info}_cancel",
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST from the task page: retry this task now."""
        return self._button(request, object_id, _retrier(actor(request)), "retried")

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST from the task page: cancel this task."""
        cancel = _canceller(actor(request))
        return self._button(request, object_id, cancel, "cancelled")

    def _button(
        self,
        request: HttpRequest,
        object_id: str,
        act: Callable[[Any], str | None],
        done_word: str,
    ) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        self._act(request, [object_id], act, done_word)
        info = f"admin:{self.opts.app_label}_{self.opts.model_name}"
        if not TaskRecord.objects.filter(pk=_pk_or_none(object_id)).exists():
            return HttpResponseRedirect(reverse(f"{info}_changelist"))
        return HttpResponseRedirect(reverse(f"{info}_change", args=[object_id]))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        task = TaskRecord.objects.filter(pk=_pk_or_none(object_id)).first()
        may_act = self.has_change_permission(request, task)
        context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "can_retry_now": bool(task and may_act and task.status in RETRYABLE),
            "can_cancel": bool(task and may_act and task.status in ACTIVE),
        }
        return super().change_view(request, object_id, form_url, context)


def _pk_or_none(object_id: str) -> Any:
    try:
        return TaskRecord._meta.pk.to_python(object_id)
    except ValidationError:
        return None


def actor(request: HttpRequest) -> audit.Actor:
    return audit.Actor.of(request.user, "admin")


def _retrier(by: audit.Actor) -> Callable[[Any], str | None]:
    def retry(task_id: Any) -> str | None:
        try:
            audit.retry_now(task_id, by)
        except (TaskNotFound, ValueError) as err:
            return str(err)
        return None

    return retry


def _canceller(by: audit.Actor) -> Callable[[Any], str | None]:
    reason = f"cancelled by {by.label} in the admin"

    def cancel(task_id: Any) -> str | None:
        try:
            if get_task(task_id).status in ACTIVE:
                task = audit.cancel(task_id, by, reason)
                if task.status == Status.CANCELLED and task.reason == reason:
                    return None
            task = get_task(task_id)
        except TaskNotFound as err:
            return str(err)
        return f"task {task.id} is already {task.status}; nothing to cancel"

    return cancel
