"""Template helpers that show a task the same way the page's script does."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

#: A symbol per status, so status never relies on colour alone.
SYMBOLS = {
    "queued": "…",
    "running": "▶",
    "retrying": "↻",
    "succeeded": "✓",
    "dead": "✗",
    "cancelled": "⊘",
}


@register.simple_tag
def status_symbol(status: str) -> str:
    """The symbol shown before a status name."""
    return SYMBOLS.get(status, "?")


@register.simple_tag
def attempt_text(task: Any) -> str:
    """ "attempt 2 of 5", or "not started"."""
    if not task.attempt:
        return "not started"
    of = f" of {task.max_attempts}" if task.max_attempts else ""
    return f"attempt {task.attempt}{of}"
