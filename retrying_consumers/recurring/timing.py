"""A periodic task's schedule and its ticks: cron in a time zone, or an interval.

A :class:`Schedule` is what :mod:`.specs` makes of a declaration; its ticks are
whole seconds, and :meth:`Schedule.due_tick` says whether one is due now.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim

CatchUp = Literal["once", "skip"]
CATCH_UPS: tuple[CatchUp, ...] = ("once", "skip")
#: Intervals count from here unless a schedule gives its own ``anchor``: an
#: hourly interval ticks on the hour (UTC), every 15 minutes at :00, :15, ...
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A tick found due later than this after its time was missed (no worker
#: looked in time): the schedule's ``catch_up`` decides whether it runs.
LATE_AFTER = timedelta(seconds=60)


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


def iter_ticks(
    schedule: Schedule, start: datetime, end: datetime
) -> Iterator[datetime]:
    """The ticks of ``schedule`` after ``start`` up to ``end`` (for previews)."""
    tick = schedule.next_tick(start)
    while tick is not None and tick <= end:
        yield tick
        tick = schedule.next_tick(tick)
