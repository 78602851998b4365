"""Due ticks of periodic tasks become tasks, exactly once, from any worker.

There is no single "beat" process. Every worker wakes at each schedule's next
tick, and at least once a second (:func:`atick`); a due tick is taken
by inserting the unique (schedule, tick) row of a
:class:`~retrying_consumers.models.ScheduleTick` and enqueueing the tick's task
in the same transaction. Whichever worker inserts first enqueues; every other
worker's insert fails on the unique constraint and it enqueues nothing. A
worker killed inside that transaction leaves neither row nor task, so the next
look of any worker takes the tick again.

From there the tick's task is an ordinary task: attempts, backoff,
dead-lettering, progress, the page, the admin and the commands.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError
from django.db.models import Max, Q
from django.utils import timezone

from ..core.conf import worker_id
from ..core.exceptions import ConfigurationError
from ..models import ScheduleTick, TaskRecord
from ..producing import producer
from ..storage.health import is_outage
from ..storage.writers import write_turn, writing
from .schedules import Schedule, all_schedules, import_task_at

logger = logging.getLogger("retrying_consumers.schedules")

#: Tick rows are kept this long (each schedule's latest always: it says which
#: tick ran last). Tasks keep their own retention.
KEEP_TICKS = timedelta(days=7)
#: Seconds between two purges of old tick rows by one process.
PURGE_INTERVAL = 600.0

#: Seconds after a tick's time that a worker wakes to take it.
WAKE_AFTER = 0.005

# Configuration errors already logged by this process (logged once each).
_reported: set[str] = set()
_purged_at = -math.inf


def tick_key(schedule: Schedule, tick: datetime) -> str:
    """The idempotency key of a tick's task: ``schedule:<name>@<tick in UTC>``."""
    return f"schedule:{schedule.name}@{tick.isoformat()}"


def last_ticks(names: Iterable[str] | None = None) -> dict[str, datetime]:
    """The latest tick taken of each named schedule (None: of every schedule)."""
    ticks = ScheduleTick.objects.all()
    if names is not None:
        ticks = ticks.filter(schedule__in=list(names))
    rows = ticks.values("schedule").annotate(last=Max("tick_at")).order_by()
    return {row["schedule"]: row["last"] for row in rows}


def purge_old_ticks(now: datetime) -> int:
    """Delete tick rows older than ``KEEP_TICKS`` but each schedule's latest."""
    cutoff = now - KEEP_TICKS
    old = Q()
    for name, last in last_ticks().items():
        old |= Q(schedule=name, tick_at__lt=min(last, cutoff))
    if not old:
        return 0
    with write_turn():
        deleted, _ = ScheduleTick.objects.filter(old).delete()
    return deleted


def take_tick(schedule: Schedule, tick: datetime) -> uuid.UUID | None:
    """Enqueue the task of ``tick`` unless another worker already did.

    Returns the new task's id, or None if the tick was taken before. The
    tick's row and its task are written in one transaction: both, or neither.
    """
    try:
        with writing():
            row = ScheduleTick.objects.create(
                schedule=schedule.name, tick_at=tick, worker=worker_id()
            )
            task_id = enqueue_tick(schedule, tick)
            ScheduleTick.objects.filter(pk=row.pk).update(task_id=task_id)
    except IntegrityError:
        if ScheduleTick.objects.filter(schedule=schedule.name, tick_at=tick).exists():
            return None  # another worker took it first
        raise
    return task_id


def enqueue_tick(schedule: Schedule, tick: datetime) -> uuid.UUID:
    """Enqueue the task of one tick of ``schedule`` (in the caller's transaction)."""
    if schedule.task is not None:
        task = import_task_at(schedule.task)
        result = task.enqueue(*schedule.args, **dict(schedule.kwargs))
        return uuid.UUID(str(result.id))
    assert schedule.channel is not None and schedule.type is not None
    fields = producer.prepare(
        schedule.channel,
        schedule.type,
        dict(schedule.payload),
        max_attempts=schedule.max_attempts,
        idempotency_key=tick_key(schedule, tick),
    )
    return producer.submit(fields).id


def run_due_schedules(now: datetime | None = None) -> list[uuid.UUID]:
    """Take every tick due at ``now`` (default: the present); return the new tasks.

    Store outages propagate (the worker waits them out); any other failure of
    one schedule is logged, and the others still run.
    """
    try:
        schedules = all_schedules()
    except ConfigurationError as err:
        _report_once(str(err))
        return []
    if not schedules:
        return []
    now = now or timezone.now()
    last = last_ticks(schedules)
    started = []
    for schedule in schedules.values():
        tick = schedule.due_tick(now, last.get(schedule.name))
        if tick is None:
            continue
        try:
            task_id = take_tick(schedule, tick)
        except Exception as err:
            if is_outage(err):
                raise
            logger.exception(
                "periodic task could not be enqueued: schedule=%s tick=%s",
                schedule.name,
                tick.isoformat(),
                extra={"schedule": schedule.name, "outcome": "tick_failed"},
            )
            continue
        if task_id is not None:
            started.append(task_id)
            _log_tick(schedule, tick, task_id, now)
    return started


def tick(max_wait: float, now: datetime | None = None) -> float:
    """Take the ticks due at ``now``; return the seconds until the next tick.

    At most ``max_wait``, so that a worker also looks now and then when no
    tick is near (for ticks missed meanwhile, and for changed settings). A
    worker that sleeps this long wakes just after the next tick, together
    with every other worker: the store gives the tick to one of them.
    """
    now = now or timezone.now()
    run_due_schedules(now)
    try:
        found = all_schedules()
    except ConfigurationError:
        return float(max_wait)
    upcoming = [t for s in found.values() if (t := s.next_tick(now)) is not None]
    if not upcoming:
        return float(max_wait)
    seconds = (min(upcoming) - now).total_seconds() + WAKE_AFTER
    return float(min(max_wait, max(0.0, seconds)))


async def atick(max_wait: float) -> float:
    """Async twin of :func:`tick`, for the worker's loop."""
    return await database_sync_to_async(tick)(max_wait)


def _log_tick(
    schedule: Schedule, tick: datetime, task_id: uuid.UUID, now: datetime
) -> None:
    late = (now - tick).total_seconds()
    logger.info(
        "periodic task enqueued: schedule=%s tick=%s task_id=%s late=%.1fs",
        schedule.name,
        tick.isoformat(),
        task_id,
        late,
        extra={
            "schedule": schedule.name,
            "tick": tick.isoformat(),
            "task_id": str(task_id),
            "late_seconds": late,
            "outcome": "ticked",
        },
    )


async def apurge_old_ticks() -> int:
    """:func:`purge_old_ticks` now, unless this process did less than
    ``PURGE_INTERVAL`` seconds ago (for the worker's scheduler pass)."""
    global _purged_at
    if time.monotonic() - _purged_at < PURGE_INTERVAL:
        return 0
    _purged_at = time.monotonic()
    return await database_sync_to_async(purge_old_ticks)(timezone.now())


def declared() -> bool:
    """Whether any periodic task is declared (True if the declarations are
    wrong: the worker then logs why none runs)."""
    try:
        return bool(all_schedules())
    except ConfigurationError:
        return True


def _report_once(problem: str) -> None:
    if problem not in _reported:
        _reported.add(problem)
        logger.critical("periodic tasks are not running: %s", problem)


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule as people see it: when it runs next and how its last tick went."""

    schedule: Schedule
    next_run: datetime | None
    last_tick: datetime | None
    last_task_id: uuid.UUID | None
    last_status: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, for ``tasks schedules --json`` and the page."""
        s = self.schedule
        return {
            "name": s.name,
            "target": s.target,
            "expression": s.expression,
            "timezone": s.timezone,
            "catch_up": s.catch_up,
            "next_run": _iso(self.next_run),
            "last_tick": _iso(self.last_tick),
            "last_task_id": str(self.last_task_id) if self.last_task_id else None,
            "last_status": self.last_status,
        }


def schedule_states(now: datetime | None = None) -> list[ScheduleState]:
    """Every declared schedule with its next run and its last tick, by name.

    Raises ``ConfigurationError`` if the declarations are wrong.
    """
    now = now or timezone.now()
    found = all_schedules()
    last = last_ticks(found)
    rows = {
        (row.schedule, row.tick_at): row.task_id
        for row in ScheduleTick.objects.filter(
            schedule__in=list(last), tick_at__in=list(last.values())
        )
    }
    task_ids = [t for t in rows.values() if t is not None]
    statuses = dict(
        TaskRecord.objects.filter(pk__in=task_ids).values_list("pk", "status")
    )
    states = []
    for name, schedule in found.items():
        tick = last.get(name)
        task_id = rows.get((name, tick)) if tick is not None else None
        states.append(
            ScheduleState(
                schedule=schedule,
                next_run=schedule.next_tick(now),
                last_tick=tick,
                last_task_id=task_id,
                last_status=statuses.get(task_id) if task_id else None,
            )
        )
    return states


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
