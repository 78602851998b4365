"""Ticks of periodic tasks in the Django admin: which tick ran as which task.

Read-only: a tick row is the claim that keeps a tick from running twice, so
nobody adds, edits or deletes one by hand.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from ..models import ScheduleTick, TaskRecord
from .readonly_admin import ReadOnlyAdmin


@admin.register(ScheduleTick)
class ScheduleTickAdmin(ReadOnlyAdmin):
    """Every tick taken, newest first, with its task and the task's status."""

    list_display = ("schedule", "tick_at", "task", "status", "worker", "created_at")
    list_filter = ("schedule", "tick_at")
    search_fields = ("schedule", "task_id")
    date_hierarchy = "tick_at"
    list_per_page = 50
    show_full_result_count = False
    readonly_fields = [field.name for field in ScheduleTick._meta.fields]

    def get_queryset(self, request: HttpRequest) -> Any:
        # The task's status in the same query: tasks are not a foreign key.
        status = TaskRecord.objects.filter(pk=OuterRef("task_id")).values("status")
        return super().get_queryset(request).annotate(task_status=Subquery(status))

    @admin.display(description="task")
    def task(self, obj: ScheduleTick) -> str:
        if obj.task_id is None:
            return "-"
        url = reverse("admin:retrying_consumers_taskrecord_change", args=[obj.task_id])
        return format_html('<a href="{}">{}</a>', url, obj.task_id)

    @admin.display(description="task status")
    def status(self, obj: ScheduleTick) -> str:
        if obj.task_id is None:
            return "-"
        return getattr(obj, "task_status", None) or "deleted"
