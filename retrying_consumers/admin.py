"""Task records in the Django admin: find a task, read why it died."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AttemptRecord, TaskRecord


class AttemptInline(admin.TabularInline):
    model = AttemptRecord
    extra = 0
    can_delete = False
    fields = (
        "number",
        "outcome",
        "worker",
        "started_at",
        "finished_at",
        "error_class",
        "error_message",
        "decision",
        "next_attempt_at",
        "traceback",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "type",
        "channel",
        "status",
        "attempt",
        "max_attempts",
        "error_class",
        "created_at",
    )
    list_filter = ("status", "channel", "type", "created_at")
    search_fields = ("id", "type", "error_message", "error_class")
    date_hierarchy = "created_at"
    inlines = [AttemptInline]
    # State changes go through the store's conditional updates, never a form.
    readonly_fields = [field.name for field in TaskRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
