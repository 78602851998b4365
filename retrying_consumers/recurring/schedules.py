"""Periodic tasks: what runs when, declared in settings or with ``@periodic``.

A :class:`Schedule` names a target (a consumer's message type on a channel, or
a ``@task`` function) and when it runs: a cron expression evaluated in a time
zone, or a fixed interval. This module only declares schedules and computes
their ticks; :mod:`retrying_consumers.ticking` turns each due tick into one
ordinary task, exactly once however many workers look.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import autodiscover_modules, import_string

from ..core.exceptions import ConfigurationError

CatchUp = Literal["once", "skip"]
CATCH_UPS: tuple[CatchUp, ...] = ("once", "skip")
#: Intervals count from here unless a schedule gives its own ``anchor``: an
#: hourly interval ticks on the hour (UTC), every 15 minutes at :00, :15, ...
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A tick found due later than this after its time was missed (no worker
#: looked in time): the schedule's ``catch_up`` decides whether it runs.
LATE_AFTER = timedelta(seconds=60)
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


@dataclass(frozen=True, slots=True)
class Schedule:
    """One periodic task: a target, and the ticks at which it runs.

    Exactly one of ``cron`` and ``every`` is set. A target is either
    ``channel`` and ``type`` (with ``payload``), or ``task``, the dotted path
    of a ``@task`` function (with ``args`` and ``kwargs``).
    """

    name: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    anchor: datetime = EPOCH
    catch_up: CatchUp = "once"
    channel: str | None = None
    type: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    max_attempts: int | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """What a tick runs, as people read it: ``channel:type`` or the task path."""
        return self.task or f"{self.channel}:{self.type}"

    @property
    def expression(self) -> str:
        """When it runs, as people read it: the cron expression or ``every 30s``."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {self.every.total_seconds():g}s"

    def latest_tick(self, now: datetime) -> datetime | None:
        """The last tick at or before ``now`` (UTC), or None if there is none."""
        if self.every is not None:
            if now < self.anchor:
                return None
            return (
                self.anchor + (now - self.anchor) // self.every * self.every
            ).astimezone(UTC)
        return _cron_tick(self, now, reverse=True)

    def next_tick(self, now: datetime) -> datetime | None:
        """The first tick after ``now`` (UTC), or None if the expression has none."""
        if self.every is not None:
            if now < self.anchor:
                return self.anchor.astimezone(UTC)
            count = (now - self.anchor) // self.every + 1
            return (self.anchor + count * self.every).astimezone(UTC)
        return _cron_tick(self, now, reverse=False)

    def due_tick(self, now: datetime, last: datetime | None) -> datetime | None:
        """The tick to run at ``now``, given the last tick run (None: none yet).

        The latest tick at or before ``now``, if it is later than ``last`` and
        either on time (found within ``LATE_AFTER``) or missed while no worker
        looked, with ``catch_up="once"``: then it runs once, however many ticks
        were missed. A schedule that has never run runs no missed tick: its
        first tick is the first that falls due while a worker looks.
        """
        tick = self.latest_tick(now)
        if tick is None or (last is not None and tick <= last):
            return None
        if now - tick <= LATE_AFTER:
            return tick
        return tick if self.catch_up == "once" and last is not None else None


def _cron_tick(schedule: Schedule, now: datetime, *, reverse: bool) -> datetime | None:
    # Ticks fall on whole seconds and CronSim steps strictly away from its
    # start: from the second after ``now`` backwards, from ``now`` forwards.
    start = now.astimezone(ZoneInfo(schedule.timezone)).replace(microsecond=0)
    if reverse:
        start += timedelta(seconds=1)
    assert schedule.cron is not None
    try:
        return next(CronSim(schedule.cron, start, reverse=reverse)).astimezone(UTC)
    except StopIteration:  # no match within 50 years
        return None


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


def iter_ticks(
    schedule: Schedule, start: datetime, end: datetime
) -> Iterator[datetime]:
    """The ticks of ``schedule`` after ``start`` up to ``end`` (for previews)."""
    tick = schedule.next_tick(start)
    while tick is not None and tick <= end:
        yield tick
        tick = schedule.next_tick(tick)
