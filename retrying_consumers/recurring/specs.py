"""Declarations of periodic tasks, read and checked: settings entries and
``@periodic`` arguments become :class:`~.timing.Schedule` objects.

Every problem raises ``ConfigurationError`` naming the schedule and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.utils.module_loading import import_string

from ..core.exceptions import ConfigurationError
from .timing import CATCH_UPS, EPOCH, Schedule

#: The most characters of a schedule's name.
MAX_NAME_LENGTH = 100
#: Keys a schedule's declaration may have.
KEYS = frozenset(
    {
        "cron",
        "every",
        "timezone",
        "anchor",
        "catch_up",
        "channel",
        "type",
        "payload",
        "max_attempts",
        "task",
        "args",
        "kwargs",
    }
)


def parse(name: Any, spec: Any, *, import_task: bool = True) -> Schedule:
    """The :class:`Schedule` that ``spec`` (a settings entry) declares.

    Raises ``ConfigurationError`` that names the schedule and the key at fault.
    """
    where = f"periodic task {name!r}"
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"{where}: a name is a string of 1 to {MAX_NAME_LENGTH} characters"
        )
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where} must be a dict, not {spec!r}")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(KEYS))}"
        )
    try:
        return _build(name, dict(spec), import_task)
    except ConfigurationError as err:
        raise ConfigurationError(f"{where}: {err}") from None


def _build(name: str, spec: dict[str, Any], import_task: bool) -> Schedule:
    values = {"name": name, **_timing(spec), **_target(spec, import_task)}
    catch_up = spec.get("catch_up", "once")
    if catch_up not in CATCH_UPS:
        raise ConfigurationError(f"catch_up must be 'once' or 'skip', not {catch_up!r}")
    schedule = Schedule(catch_up=catch_up, **values)
    if schedule.cron is not None:
        _check_cron(schedule)
    return schedule


def _timing(spec: dict[str, Any]) -> dict[str, Any]:
    cron, every = spec.get("cron"), spec.get("every")
    if (cron is None) == (every is None):
        raise ConfigurationError("give exactly one of cron= and every=")
    zone = spec.get("timezone") or settings.TIME_ZONE or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"timezone {zone!r} is not a known time zone"
        ) from None
    if cron is not None:
        if not isinstance(cron, str):
            raise ConfigurationError(f"cron must be a string, not {cron!r}")
        if "anchor" in spec:
            raise ConfigurationError("anchor= goes with every=, not with cron=")
        return {"cron": " ".join(cron.split()), "timezone": zone}
    return {
        "every": _interval(every),
        "anchor": _anchor(spec.get("anchor")),
        "timezone": zone,
    }


def _interval(every: Any) -> timedelta:
    if isinstance(every, bool) or not isinstance(every, int | float | timedelta):
        raise ConfigurationError(f"every must be seconds or a timedelta, not {every!r}")
    interval = every if isinstance(every, timedelta) else timedelta(seconds=every)
    if interval < timedelta(seconds=1):
        raise ConfigurationError(f"every must be at least 1 second, not {every!r}")
    return interval


def _anchor(anchor: Any) -> datetime:
    if anchor is None:
        return EPOCH
    if isinstance(anchor, str):
        try:
            anchor = datetime.fromisoformat(anchor)
        except ValueError:
            raise ConfigurationError(
                f"anchor {anchor!r} is not an ISO 8601 time"
            ) from None
    if not isinstance(anchor, datetime) or anchor.utcoffset() is None:
        raise ConfigurationError(f"anchor must be an aware datetime, not {anchor!r}")
    return anchor.astimezone(UTC)


def _target(spec: dict[str, Any], import_task: bool) -> dict[str, Any]:
    from ..core.payload import validate_payload
    from ..producing.producer import validate_address, validate_max_attempts

    task = spec.get("task")
    consumer_keys = {"channel", "type", "payload", "max_attempts"} & spec.keys()
    if task is not None:
        if consumer_keys:
            raise ConfigurationError(
                f"task= runs a @task function; {', '.join(sorted(consumer_keys))} "
                "go with channel= and type= instead"
            )
        if import_task or not isinstance(task, str):
            import_task_at(task)
        args, kwargs = spec.get("args", ()), spec.get("kwargs", {})
        if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
            raise ConfigurationError("args must be a list and kwargs a dict")
        return {"task": task, "args": tuple(args), "kwargs": dict(kwargs)}
    if {"args", "kwargs"} & spec.keys():
        raise ConfigurationError("args= and kwargs= go with task=")
    channel, kind = spec.get("channel", ""), spec.get("type", "")
    payload = spec.get("payload", {})
    try:
        validate_address(channel, kind)
        validate_payload(payload)
        validate_max_attempts(spec.get("max_attempts"))
    except ValueError as err:
        raise ConfigurationError(f"give task=, or channel= and type=: {err}") from None
    return {
        "channel": channel,
        "type": kind,
        "payload": dict(payload),
        "max_attempts": spec.get("max_attempts"),
    }


def import_task_at(path: Any) -> Any:
    """The ``@task`` function at dotted ``path``; ``ConfigurationError`` if none."""
    from django.tasks import Task

    if not isinstance(path, str):
        raise ConfigurationError(f"task must be a dotted path, not {path!r}")
    try:
        found = import_string(path)
    except ImportError as err:
        raise ConfigurationError(f"task {path!r} cannot be imported: {err}") from None
    if not isinstance(found, Task):
        raise ConfigurationError(f"task {path!r} is not a @task function")
    return found


def _check_cron(schedule: Schedule) -> None:
    assert schedule.cron is not None
    try:
        CronSim(schedule.cron, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as err:
        raise ConfigurationError(
            f"cron {schedule.cron!r} is not valid: {err}"
        ) from None
    if schedule.next_tick(datetime.now(UTC)) is None:
        raise ConfigurationError(f"cron {schedule.cron!r} never matches")
