"""Task records in the Django admin: find a task, read why it died, act on it.

Every field is read-only: state changes only through the store's conditional
updates (``retry_now``, ``cancel``), never through a form that could overwrite
what a worker wrote meanwhile. Staff with the change permission get the actions
"Retry now" and "Cancel" (on the list and on a task's page); staff with the
delete permission may delete finished tasks. Unfinished tasks cannot be deleted:
cancel them first, so that no accepted work disappears silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from .models import ACTIVE, AttemptRecord, TaskRecord
from .ops import audit, audit_admin, followups_admin, schedule_admin, task_admin_actions  # noqa: F401
from .ops.deletion import delete_finished
from .ops.task_admin_actions import RETRYABLE as RETRYABLE
from .ops.task_admin_actions import TaskRecordActions, actor


def _pre(value: str) -> str:
    # A class, not a style attribute: the page's Content-Security-Policy may
    # refuse inline styles.
    return format_html('<pre class="rc-text">{}</pre>', value)


def _json(value: Any) -> str:
    return _pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


class AttemptInline(admin.StackedInline):
    """Every attempt of the task, with its error and traceback."""

    model = AttemptRecord
    extra = 0
    can_delete = False
    fields = (
        ("number", "outcome", "worker"),
        ("started_at", "finished_at"),
        ("decision", "next_attempt_at"),
        "error_class",
        "error_message",
        "traceback_text",
    )
    readonly_fields = (
        "number",
        "outcome",
        "worker",
        "started_at",
        "finished_at",
        "decision",
        "next_attempt_at",
        "error_class",
        "error_message",
        "traceback_text",
    )

    @admin.display(description="traceback")
    def traceback_text(self, obj: AttemptRecord) -> str:
        return _pre(obj.traceback) if obj.traceback else "-"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Attempts are part of their task: whoever may see the task sees them.
        user = request.user
        return bool(
            user.has_perm("retrying_consumers.view_taskrecord")
            or user.has_perm("retrying_consumers.change_taskrecord")
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskRecord)
class TaskRecordAdmin(TaskRecordActions):
    """The task list (the backlog and the dead-letter queue) and each task's page."""

    list_display = (
        "id",
        "type",
        "channel",
        "status",
        "attempts",
        "error",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "channel", "type", "created_at", "finished_at")
    search_fields = ("id", "type", "error_class", "error_message", "reason")
    date_hierarchy = "created_at"
    list_per_page = 50
    # Counting a large table twice per page is slow; one count is enough.
    show_full_result_count = False
    inlines = [AttemptInline]
    actions = ["retry_now", "cancel_tasks", "delete_selected"]
    change_form_template = "admin/retrying_consumers/taskrecord/change_form.html"

    class Media:
        css = {"all": ["retrying_consumers/admin.css"]}

    fieldsets = (
        (None, {"fields": ("id", "channel", "type", "status", "reason", "owner")}),
        (
            "Attempts",
            {
                "fields": (
                    ("attempt", "max_attempts", "attempt_budget", "drive_offset"),
                    ("due_at", "lease_owner", "lease_expires_at"),
                    ("error_class", "error_message"),
                )
            },
        ),
        ("Progress", {"fields": ("progress", "progress_at")}),
        ("Audit trail", {"fields": ("audit_trail",)}),
        ("Payload and result", {"fields": ("payload_json", "result_json")}),
        (
            "Follow-ups",
            {"fields": ("parent_link", "group_id", "followups", "children_links")},
        ),
        (
            "Times",
            {
                "fields": (
                    ("created_at", "started_at", "finished_at", "updated_at"),
                    "idempotency_key",
                )
            },
        ),
    )
    # State changes go through the store's conditional updates, never a form.
    readonly_fields = [
        *(field.name for field in TaskRecord._meta.fields),
        "progress",
        "payload_json",
        "result_json",
        "parent_link",
        "children_links",
        "audit_trail",
    ]

    @admin.display(description="parent")
    def parent_link(self, obj: TaskRecord) -> str:
        """The task (or the group) whose end enqueued this one, linked."""
        if obj.parent_id is None:
            return "-"
        if not TaskRecord.objects.filter(pk=obj.parent_id).exists():
            return f"group {obj.parent_id}"
        return _task_link(obj.parent_id)

    @admin.display(description="follow-ups enqueued")
    def children_links(self, obj: TaskRecord) -> str:
        children = TaskRecord.objects.filter(parent_id=obj.pk).values_list(
            "pk", flat=True
        )
        return (
            format_html_join(", ", "{}", ((_task_link(pk),) for pk in children)) or "-"
        )

    @admin.display(description="attempts")
    def attempts(self, obj: TaskRecord) -> str:
        return f"{obj.attempt}/{obj.max_attempts or '?'}"

    @admin.display(description="error")
    def error(self, obj: TaskRecord) -> str:
        if not obj.error_class:
            return ""
        text = f"{obj.error_class}: {obj.error_message}"
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="progress")
    def progress(self, obj: TaskRecord) -> str:
        if obj.progress_current is None:
            return "-"
        text = f"{obj.progress_current:g}"
        if obj.progress_total:
            share = 100 * obj.progress_current / obj.progress_total
            text += f" / {obj.progress_total:g} ({share:.0f}%)"
        return f"{text} {obj.progress_message}".strip()

    @admin.display(description="payload")
    def payload_json(self, obj: TaskRecord) -> str:
        return _json(obj.payload)

    @admin.display(description="result")
    def result_json(self, obj: TaskRecord) -> str:
        return "-" if obj.result is None else _json(obj.result)

    @admin.display(description="who acted on it")
    def audit_trail(self, obj: TaskRecord) -> str:
        return audit_admin.trail_html(obj.pk)

    # Permissions ---------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: TaskRecord | None = None
    ) -> bool:
        if obj is not None and obj.status in ACTIVE:
            return False  # cancel it first: accepted work never vanishes silently
        return bool(super().has_delete_permission(request, obj))

    def delete_model(self, request: HttpRequest, obj: TaskRecord) -> None:
        """Delete one task if it is still finished (checked under a lock)."""
        self._delete_finished(request, [obj.pk])

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[TaskRecord]
    ) -> None:
        """Delete the finished tasks of ``queryset``; unfinished ones stay."""
        self._delete_finished(request, queryset.values_list("pk", flat=True))

    def _delete_finished(self, request: HttpRequest, task_ids: Iterable[Any]) -> None:
        # A task re-driven after the confirmation page was shown is refused
        # here, at the moment of the delete, not only when it was chosen.
        outcome = delete_finished(task_ids, by=actor(request))
        if outcome.unfinished:
            self.message_user(
                request,
                f"{len(outcome.unfinished)} unfinished task(s) left alone; "
                "cancel them first.",
                messages.WARNING,
            )

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any, change: Any
    ) -> None:
        """Nothing to save: every field is read-only (a save would race workers)."""


def _task_link(task_id: Any) -> str:
    url = reverse("admin:retrying_consumers_taskrecord_change", args=[task_id])
    return format_html('<a href="{}">{}</a>', url, task_id)


# Their names here before they moved to ops.task_admin_actions.
_pk_or_none = task_admin_actions._pk_or_none
_actor = actor
_retrier = task_admin_actions._retrier
_canceller = task_admin_actions._canceller
