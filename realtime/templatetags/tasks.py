"""Template helpers that show a task the same way the page's script does.

Times are shown to the second with their time zone ("2026-12-03 14:02:03 UTC",
in the current time zone, ``settings.TIME_ZONE`` by default), durations the way
a person reads them ("took 1.4 s", "2 min 05 s").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

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


@register.simple_tag
def drive_text(task: Any) -> str:
    """After a manual re-drive, the attempts counted since it: "2 of 3 since the
    retry" (the policy's "attempts exhausted (3 of 3)" counts these); else ""."""
    if not task.drive_offset:
        return ""
    done = max(0, task.attempt - task.drive_offset)
    of = f" of {task.max_attempts - task.drive_offset}" if task.max_attempts else ""
    return f"{done}{of} since the retry"


@register.filter
def when(value: datetime | None) -> str:
    """A time to the second with its time zone: "2026-12-03 14:02:03 UTC"."""
    if value is None:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    zone = local.tzname() or ""
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}".strip()


@register.simple_tag
def moment(value: datetime | None, empty: str = "—") -> SafeString:
    """A ``<time>`` element showing :func:`when`, or ``empty`` for no time."""
    if value is None:
        return format_html("{}", empty)
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), when(value))


@register.filter
def seconds_text(seconds: float | timedelta | None) -> str:
    """A duration as people read it: "0.25 s", "1.4 s", "42 s", "2 min 05 s",
    "1 h 02 min", "3 d 4 h"."""
    if seconds is None:
        return ""
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@register.simple_tag
def took(start: datetime | None, end: datetime | None) -> str:
    """The time from ``start`` to ``end`` (:func:`seconds_text`), "" if either is
    missing."""
    if start is None or end is None:
        return ""
    return seconds_text(end - start)


#: What the policy decided after a failed attempt, as the page says it.
DECISIONS = {"give_up": "gave up", "discard": "discarded", "retry": "retried"}


@register.filter
def decision_text(decision: str) -> str:
    """ "give_up" -> "gave up"; unknown decisions are shown as stored."""
    return DECISIONS.get(decision, decision.replace("_", " "))
