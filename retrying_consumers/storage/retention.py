"""Retention: deleting finished task records once nobody needs them.

``purge`` deletes finished tasks of one status (and their attempts) whose
``finished_at`` is older than a given age, in short batches so that a large purge
never holds the table for long. Each batch selects on the ``(status,
finished_at)`` index, locks the rows it picked (skipping rows that another
process holds), and deletes only those that are still finished: a task re-driven
by ``retry_now`` meanwhile is never deleted.

Workers run :func:`apurge_expired` from their scheduler; it purges by the
``PURGE_SUCCEEDED_AFTER``, ``PURGE_DEAD_AFTER`` and ``PURGE_CANCELLED_AFTER``
settings at most once per :data:`PURGE_INTERVAL` seconds in each process, and
forgets registry rows of workers silent for :data:`FORGET_WORKERS_AFTER` seconds
(a worker killed without a word never removes its own row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Q
from django.utils import timezone

from ..core.conf import LibrarySettings, library_settings
from ..models import FINAL, Status, TaskRecord, WorkerRecord
from .writers import writing

logger = logging.getLogger("retrying_consumers.retention")

#: Seconds between two automatic purges in one process.
PURGE_INTERVAL = 60.0
#: Tasks deleted per batch (one short transaction each).
BATCH_SIZE = 500
#: Batches one automatic purge may delete before it leaves the rest for later.
MAX_AUTO_BATCHES = 20
#: Seconds after its last heartbeat that a silent worker leaves the registry.
FORGET_WORKERS_AFTER = 86400.0
#: The statuses that can be purged.
FINISHED = tuple(str(status) for status in FINAL)


def purge(
    status: str,
    older_than: timedelta | float,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
    only: Q | None = None,
) -> int:
    """Delete ``status`` tasks finished more than ``older_than`` ago; return how many.

    ``status`` must be a final one (succeeded, dead or cancelled); ``older_than``
    is a ``timedelta`` or seconds. With ``max_batches``, stop after that many
    batches (the rest is left for the next call); with ``only``, delete only
    the tasks that match it too.
    """
    if status not in FINISHED:
        raise ValueError(
            f"only finished tasks can be purged ({', '.join(FINISHED)}), not {status!r}"
        )
    age = _seconds(older_than)
    if age < 0:
        raise ValueError(f"older_than must be >= 0 seconds, got {older_than!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    cutoff = (now or timezone.now()) - timedelta(seconds=age)
    deleted = batches = 0
    while max_batches is None or batches < max_batches:
        count = _purge_batch(status, cutoff, batch_size, only or Q())
        deleted += count
        batches += 1
        if count < batch_size:
            break
    return deleted


def count_purgeable(
    status: str, older_than: timedelta | float, *, now: datetime | None = None
) -> int:
    """How many tasks :func:`purge` would delete now (for a dry run)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=_seconds(older_than))
    return int(TaskRecord.objects.filter(status=status, finished_at__lt=cutoff).count())


def _purge_batch(status: str, cutoff: datetime, batch_size: int, only: Q) -> int:
    with writing():
        # On PostgreSQL the rows stay locked until commit, so a concurrent
        # retry_now waits and then finds the task gone instead of losing it to
        # the purge. SQLite's IMMEDIATE transactions hold the write lock anyway.
        ids = list(
            TaskRecord.objects.filter(only, status=status, finished_at__lt=cutoff)
            .order_by("finished_at")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return 0
        # Attempts go with their task (one DELETE ... WHERE task_id IN ...).
        _, per_model = (
            TaskRecord.objects.filter(pk__in=ids, status=status).only("pk").delete()
        )
    return int(per_model.get(TaskRecord._meta.label, 0))


def _seconds(value: timedelta | float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"an age must be seconds or a timedelta, got {value!r}")
    return float(value)


def retention_ages(lib: LibrarySettings) -> dict[str, float]:
    """Status -> age in seconds after which it is purged, for the configured ones."""
    ages = {
        Status.SUCCEEDED: lib.purge_succeeded_after,
        Status.DEAD: lib.purge_dead_after,
        Status.CANCELLED: lib.purge_cancelled_after,
    }
    return {str(status): age for status, age in ages.items() if age is not None}


def forget_silent_workers(now: datetime | None = None) -> int:
    """Delete registry rows of workers silent for FORGET_WORKERS_AFTER seconds."""
    cutoff = (now or timezone.now()) - timedelta(seconds=FORGET_WORKERS_AFTER)
    deleted, _ = WorkerRecord.objects.filter(heartbeat_at__lt=cutoff).delete()
    return int(deleted)


@dataclass(frozen=True)
class ResultExpiry:
    """Succeeded tasks of ``types`` on ``channel`` (all types but ``except_types``
    when ``types`` is empty) are deleted ``seconds`` after they finished."""

    channel: str
    seconds: float
    types: tuple[str, ...] = ()
    except_types: tuple[str, ...] = ()

    def matching(self) -> Q:
        found = Q(channel=self.channel)
        if self.types:
            return found & Q(type__in=self.types)
        return found & ~Q(type__in=self.except_types)


def result_expiries(channel: str, consumer: Any) -> list[ResultExpiry]:
    """The ``result_expires`` of a consumer's policies, for its ``channel``."""
    from ..core.policy import RetryPolicy

    policies = dict(getattr(consumer, "retry_policies", None) or {})
    found = [
        ResultExpiry(channel, policy.result_expires, types=(type,))
        for type, policy in sorted(policies.items())
        if isinstance(policy, RetryPolicy) and policy.result_expires is not None
    ]
    default = getattr(consumer, "retry_policy", None)
    if isinstance(default, RetryPolicy) and default.result_expires is not None:
        found.append(
            ResultExpiry(channel, default.result_expires, except_types=tuple(policies))
        )
    return found


def purge_expired(
    now: datetime | None = None, expiries: Sequence[ResultExpiry] = ()
) -> dict[str, int]:
    """Purge by the retention settings once; return status -> tasks deleted.

    Also deletes succeeded tasks by ``expiries`` (counted under
    ``"expired_results"``) and forgets long-silent workers (``"workers"``).
    """
    deleted: dict[str, int] = {}
    workers = forget_silent_workers(now)
    if workers:
        deleted["workers"] = workers
    expired = sum(
        purge(
            str(Status.SUCCEEDED),
            expiry.seconds,
            now=now,
            max_batches=MAX_AUTO_BATCHES,
            only=expiry.matching(),
        )
        for expiry in expiries
    )
    if expired:
        deleted["expired_results"] = expired
        logger.info(
            "purged succeeded tasks by their type's result_expires: count=%s",
            expired,
            extra={"count": expired},
        )
    for status, age in retention_ages(library_settings()).items():
        count = purge(status, age, now=now, max_batches=MAX_AUTO_BATCHES)
        if count:
            deleted[status] = count
            logger.info(
                "purged finished tasks: status=%s count=%s older_than_s=%g",
                status,
                count,
                age,
                extra={"status": status, "count": count},
            )
    return deleted


@dataclass
class PurgeSchedule:
    """Runs :func:`purge_expired` at most once per ``interval`` seconds."""

    interval: float = PURGE_INTERVAL
    clock: Callable[[], float] = time.monotonic
    last_run: float | None = None

    def due(self) -> bool:
        """Whether the interval has passed since the last run (or none ran yet)."""
        return self.last_run is None or self.clock() - self.last_run >= self.interval

    async def arun(self, expiries: Sequence[ResultExpiry] = ()) -> dict[str, int]:
        """Purge if due; return what was deleted."""
        if not self.due():
            return {}
        self.last_run = self.clock()
        result: dict[str, int] = await database_sync_to_async(purge_expired)(
            None, expiries
        )
        return result


_schedule = PurgeSchedule()


async def apurge_expired(expiries: Sequence[ResultExpiry] = ()) -> dict[str, int]:
    """Called by every worker's scheduler loop: purge when this process is due
    (``expiries``: the result expiries of the channels it serves)."""
    return await _schedule.arun(expiries)
