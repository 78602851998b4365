"""The audit trail in the Django admin: read-only, for everyone who may look."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from ..models import TaskAuditRecord
from . import audit
from .readonly_admin import ReadOnlyAdmin


@admin.register(TaskAuditRecord)
class TaskAuditRecordAdmin(ReadOnlyAdmin):
    """Who retried, cancelled or deleted which task, when and from where."""

    list_display = ("at", "action", "task_id", "actor_name", "source", "detail")
    list_filter = ("action", "source", "at")
    search_fields = ("task_id", "actor_name", "detail")
    date_hierarchy = "at"
    list_per_page = 100
    show_full_result_count = False
    readonly_fields = [field.name for field in TaskAuditRecord._meta.fields]


def trail_html(task_id: Any) -> str:
    """A task's trail as an HTML list, for the task's admin page."""
    entries = list(audit.trail(task_id))
    if not entries:
        return "-"
    items = format_html_join(
        "",
        "<li><time datetime='{}'>{}</time>: {} by {} (from {}){}</li>",
        (
            (
                entry.at.isoformat(),
                audit.stamp(entry.at),
                entry.get_action_display(),
                entry.actor_name or "someone",
                entry.get_source_display(),
                f"; {entry.detail}" if entry.detail else "",
            )
            for entry in entries
        ),
    )
    return str(format_html("<ul class='audit-trail'>{}</ul>", items))
