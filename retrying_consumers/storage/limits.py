"""Limits per message type across the cluster: how many run at once, how many
start per period.

A policy's ``max_running`` and ``rate_limit`` apply to one type on one channel,
whatever the number of workers and hosts. They are enforced where an attempt
starts, in the claim's transaction, with the store as the only shared state:

- The claims of a limited type first lock the type's :class:`TaskLimiter` row
  (an UPDATE: a row lock on PostgreSQL, the write lock on SQLite), so they are
  judged one at a time.
- ``max_running``: the type's running tasks are counted. At the limit, the task
  is not claimed; it stays queued, holding no worker slot, and is rung again
  when an attempt of its type ends (:func:`awake_waiting`), or by the
  scheduler ``RING_TIMEOUT`` later if that ring is lost.
- ``rate_limit`` ("N/period"): a generic cell rate algorithm. Up to N start at
  once; then one every period / N. A task over the rate gets the next free
  slot of the type's schedule as its ``due_at`` and is rung at that moment, so
  a backlog drains at the rate, in order, without asking again and again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from ..core.exceptions import TaskNotFound
from ..core.policy import RetryPolicy, parse_rate
from ..models import WAITING, Status, TaskLimiter, TaskRecord
from . import sql
from .sql import ClaimRequest
from .writers import write_turn, writing

logger = logging.getLogger("retrying_consumers.store")


#: A start the rate allows within this many seconds is waited for in place
#: (the task keeps its place), rather than given a later slot.
BRIEF_WAIT = 0.2


@dataclass(frozen=True, slots=True)
class Deferred:
    """The claim was refused by a limit; the task is due again at ``until``.

    ``brief``: nothing was changed in the store; the claimer may wait until
    ``until`` (at most ``BRIEF_WAIT`` away) and ask again.
    """

    task_id: uuid.UUID
    until: datetime
    why: str
    brief: bool = False


def is_limited(policy: RetryPolicy) -> bool:
    return policy.max_running is not None or policy.rate_limit is not None


def limiter_key(channel: str, type: str) -> str:
    return f"{channel}:{type}"[:320]


def claim_limited(
    request: ClaimRequest,
    type: str,
    policy: RetryPolicy,
    *,
    worker: str,
    lease_seconds: float,
    ring_timeout: float,
) -> TaskRecord | Deferred | None:
    """Claim like :func:`.store.claim`, within ``policy``'s limits for ``type``.

    The claimed task; a :class:`Deferred` if a limit holds it back; None if it
    is not this ring's to run (a duplicate, another channel's or type's task).
    Raises :class:`TaskNotFound`.
    """
    now = timezone.now()
    with writing():
        row = (
            TaskRecord.objects.filter(pk=request.task_id)
            .values("channel", "type", "status")
            .first()
        )
        if row is None:
            raise TaskNotFound(f"no task with id {request.task_id}")
        if row["type"] != type or row["status"] not in WAITING:
            return None
        if request.channel and row["channel"] != request.channel:
            return None
        limiter = _locked(limiter_key(row["channel"], type), now)
        # Judged, and started, as of when the lock was had, not asked for.
        now = timezone.now()
        if policy.max_running is not None:
            running = TaskRecord.objects.filter(
                status=Status.RUNNING, channel=row["channel"], type=type
            ).count()
            if running >= policy.max_running:
                until = now + timedelta(seconds=ring_timeout)
                why = f"{running} of at most {policy.max_running} running"
                return _defer(request.task_id, until, why)
        if policy.rate_limit is not None:
            count, period = parse_rate(policy.rate_limit)
            starts = [float(t) for t in limiter.starts][-count:]
            allowed = starts[0] + period if len(starts) >= count else 0.0
            at = now.timestamp()
            if at < allowed:
                return _defer_for_rate(request.task_id, limiter, allowed, count, period)
        [claimed] = sql.claim_rows(
            [request], worker=worker, lease_seconds=lease_seconds, now=now
        )
        if claimed is not None and policy.rate_limit is not None:
            TaskLimiter.objects.filter(pk=limiter.pk).update(
                starts=[*starts, at][-count:]
            )
        return claimed


def _defer_for_rate(
    task_id: uuid.UUID,
    limiter: TaskLimiter,
    allowed: float,
    count: int,
    period: float,
) -> Deferred:
    """Hold a task back until its slot of the rate.

    Slots are handed out ``period / count`` apart after the last one handed
    out, so a backlog is rung at the rate, in order; each start is judged
    again on arrival against the real start times, so the rate holds
    whatever the timers' accuracy.
    """
    first = datetime.fromtimestamp(allowed, tz=UTC)
    why = f"{count} started in the last {period:g} s"
    if allowed - timezone.now().timestamp() <= BRIEF_WAIT:
        return Deferred(task_id, first, why, brief=True)
    slot = max(limiter.reserved_until, first)
    TaskLimiter.objects.filter(pk=limiter.pk).update(
        reserved_until=slot + timedelta(seconds=period / count)
    )
    return _defer(task_id, slot, why)


def _locked(key: str, now: datetime) -> TaskLimiter:
    """The limiter row of ``key``, locked for this transaction (made if new)."""
    if not TaskLimiter.objects.filter(pk=key).update(touched_at=now):
        TaskLimiter.objects.get_or_create(
            key=key, defaults={"reserved_until": now, "touched_at": now}
        )
        TaskLimiter.objects.filter(pk=key).update(touched_at=now)
    return TaskLimiter.objects.get(pk=key)


def _defer(task_id: uuid.UUID, until: datetime, why: str) -> Deferred:
    """Leave the task waiting, due at ``until``; its attempt is not used up."""
    TaskRecord.objects.filter(pk=task_id, status__in=WAITING).update(
        due_at=until, updated_at=timezone.now()
    )
    return Deferred(task_id, until, why)


def waiting_ids(channel: str, type: str, count: int) -> list[uuid.UUID]:
    """Make the ``count`` oldest queued tasks of a limited type due now, and
    return them, for ringing: an attempt of the type has ended."""
    now = timezone.now()
    with write_turn():
        ids = list(
            TaskRecord.objects.filter(
                status=Status.QUEUED, channel=channel, type=type, due_at__gt=now
            )
            .order_by("created_at")
            .values_list("pk", flat=True)[:count]
        )
        if ids:
            TaskRecord.objects.filter(
                pk__in=ids, status=Status.QUEUED, due_at__gt=now
            ).update(due_at=now, updated_at=now)
    return ids


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """A limit a routed consumer declares, and where its type stands now."""

    channel: str
    type: str  # "*": the consumer's default policy, each type on its own
    max_running: int | None
    rate_limit: str | None
    running: int
    waiting: int


def declared_limits() -> list[LimitInfo]:
    """The limits of the consumers the ASGI application routes, by channel."""
    from ..checks import channel_routes, consumer_class, load_application

    application, _ = load_application()
    found = []
    for channel, app in sorted(channel_routes(application).items()):
        consumer = consumer_class(app)
        policies = dict(getattr(consumer, "retry_policies", None) or {})
        default = getattr(consumer, "retry_policy", None)
        if isinstance(default, RetryPolicy):
            policies.setdefault("*", default)
        for type, policy in sorted(policies.items()):
            if isinstance(policy, RetryPolicy) and is_limited(policy):
                found.append(_info(channel, type, policy))
    return found


def _info(channel: str, type: str, policy: RetryPolicy) -> LimitInfo:
    tasks = TaskRecord.objects.filter(channel=channel)
    if type != "*":
        tasks = tasks.filter(type=type)
    return LimitInfo(
        channel,
        type,
        policy.max_running,
        policy.rate_limit,
        tasks.filter(status=Status.RUNNING).count(),
        tasks.filter(status__in=WAITING).count(),
    )
