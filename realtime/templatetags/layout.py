"""The page layout's helpers."""

from __future__ import annotations

import functools
from datetime import datetime

from django import template
from django.contrib.staticfiles import finders
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.simple_tag
def inline_css(path: str) -> SafeString:
    """A static stylesheet's text, for a ``<style>`` element.

    The pages' one small stylesheet is sent inside the page: the browser can
    paint as soon as the page arrives instead of waiting for a second request.
    """
    return mark_safe(_read(path).replace("</", "<\\/"))


@functools.cache
def _read(path: str) -> str:
    found = finders.find(path)
    if not isinstance(found, str):
        raise template.TemplateSyntaxError(f"no static file {path!r}")
    with open(found, encoding="utf-8") as handle:
        return handle.read()


@register.simple_tag
def duration(start: datetime | None, end: datetime | None) -> str:
    """How long from ``start`` to ``end``: "850 ms", "12.5 s", "3 min 5 s"."""
    if start is None or end is None:
        return ""
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
