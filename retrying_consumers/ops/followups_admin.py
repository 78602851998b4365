"""Groups of tasks and the limiters of limited types in the Django admin:
read-only, for everyone who may look."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from ..models import TaskGroup, TaskLimiter
from .readonly_admin import ReadOnlyAdmin


@admin.register(TaskGroup)
class TaskGroupAdmin(ReadOnlyAdmin):
    """Tasks enqueued together, and the follow-up enqueued once all had ended."""

    list_display = ("id", "size", "follow_up", "created_at", "fired_at", "callback")
    list_filter = ("fired_at", "created_at")
    search_fields = ("id",)
    readonly_fields = [
        *(field.name for field in TaskGroup._meta.fields),
        "size",
        "callback",
    ]

    @admin.display(description="tasks")
    def size(self, obj: TaskGroup) -> int:
        return len(obj.members)

    @admin.display(description="then")
    def follow_up(self, obj: TaskGroup) -> str:
        return f"{obj.then.get('channel')}: {obj.then.get('type')}"

    @admin.display(description="follow-up task")
    def callback(self, obj: TaskGroup) -> str:
        if obj.callback_id is None:
            return "-"
        url = reverse(
            "admin:retrying_consumers_taskrecord_change", args=[obj.callback_id]
        )
        return format_html('<a href="{}">{}</a>', url, obj.callback_id)


@admin.register(TaskLimiter)
class TaskLimiterAdmin(ReadOnlyAdmin):
    """The shared state of each limited message type (channel:type)."""

    list_display = ("key", "recent_starts", "reserved_until", "touched_at")
    readonly_fields = [field.name for field in TaskLimiter._meta.fields]

    @admin.display(description="starts kept")
    def recent_starts(self, obj: TaskLimiter) -> int:
        return len(obj.starts)
