"""Periodic tasks: what runs when, declared in settings or with ``@periodic``.

A :class:`Schedule` names a target (a consumer's message type on a channel, or
a ``@task`` function) and when it runs: a cron expression evaluated in a time
zone, or a fixed interval. This module keeps the declared schedules; their
declarations are read in :mod:`.specs`, their ticks computed in :mod:`.timing`,
and :mod:`.ticking` turns each due tick into one ordinary task, exactly once
however many workers look.

::

    RETRYING_CONSUMERS = {
        "SCHEDULES": {
            "nightly-report": {
                "cron": "0 3 * * *",
                "timezone": "Europe/Berlin",
                "channel": "reports",
                "type": "report.build",
                "payload": {"kind": "daily"},
            },
            "cleanup": {"every": 300, "task": "myapp.tasks.cleanup"},
        }
    }
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import autodiscover_modules

from ..core.exceptions import ConfigurationError
from .specs import KEYS as KEYS
from .specs import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from .specs import import_task_at as import_task_at
from .specs import parse as parse
from .timing import CATCH_UPS as CATCH_UPS
from .timing import EPOCH as EPOCH
from .timing import LATE_AFTER as LATE_AFTER
from .timing import CatchUp as CatchUp
from .timing import Schedule as Schedule
from .timing import iter_ticks as iter_ticks

# Declaring ------------------------------------------------------------------

_declared: dict[str, Schedule] = {}
_lock = threading.Lock()

Target = TypeVar("Target")


def periodic(
    name: str | None = None,
    *,
    cron: str | None = None,
    every: float | timedelta | None = None,
    timezone: str | None = None,
    anchor: datetime | str | None = None,
    catch_up: CatchUp = "once",
    **target: Any,
) -> Callable[[Target], Target]:
    """Run the decorated ``@task`` function, or a consumer's message type, periodically.

    On a ``@task`` (put ``@periodic`` above it), ``args`` and ``kwargs`` are
    its arguments and ``name`` defaults to its module path. On a consumer
    class, give ``channel``, ``type`` and optionally ``payload`` and
    ``max_attempts``; ``name`` defaults to ``channel:type``. ``cron`` (five
    fields, or six with seconds first) is evaluated in ``timezone`` (default
    ``settings.TIME_ZONE``); ``every`` is seconds or a timedelta counted from
    ``anchor`` (default the Unix epoch). ``catch_up`` says what a tick missed
    while no worker ran does: ``"once"`` runs the latest missed tick once,
    ``"skip"`` waits for the next. Raises ``ConfigurationError`` at once for
    a bad declaration.
    """

    def declare(thing: Target) -> Target:
        spec: dict[str, Any] = {
            "cron": cron,
            "every": every,
            "timezone": timezone,
            "anchor": anchor,
            "catch_up": catch_up,
            **target,
        }
        module_path = getattr(thing, "module_path", None)
        if isinstance(module_path, str):  # a django.tasks Task
            spec["task"] = module_path
            default = module_path
        else:
            default = f"{target.get('channel')}:{target.get('type')}"
        given = {k: v for k, v in spec.items() if v is not None}
        # The task's module is still being imported: nothing to import yet.
        schedule = parse(name or default, given, import_task=False)
        _declare(schedule)
        return thing

    return declare


def _declare(schedule: Schedule) -> None:
    with _lock:
        known = _declared.get(schedule.name)
        if known is not None and known != schedule:
            raise ConfigurationError(
                f"two periodic tasks are named {schedule.name!r}; give one a name="
            )
        _declared[schedule.name] = schedule
    all_schedules.cache_clear()


@functools.cache
def all_schedules() -> dict[str, Schedule]:
    """Every schedule, by name: from settings and from ``@periodic``.

    The ``tasks`` module of each installed app is imported first, so that its
    decorated ``@task`` functions are declared in every process. Raises
    ``ConfigurationError`` for a bad or clashing declaration.
    """
    from ..core.conf import library_settings

    autodiscover_modules("tasks")
    found = {
        name: parse(name, spec)
        for name, spec in (library_settings().schedules or {}).items()
    }
    with _lock:
        decorated = dict(_declared)
    for name in found.keys() & decorated.keys():
        raise ConfigurationError(
            f"periodic task {name!r} is declared both in settings and with @periodic"
        )
    return dict(sorted((found | decorated).items()))


@receiver(setting_changed)
def _forget(setting: str, **kwargs: Any) -> None:
    if setting in ("RETRYING_CONSUMERS", "TIME_ZONE", "TASKS"):
        all_schedules.cache_clear()
