"""Retry, cancel or delete every task that matches the dashboard's filter.

The page first asks how many tasks match (the confirmation shows the count),
then posts the same filter with the count it showed. The work goes in batches of
ids read from the store; each task goes through the same API as a single action
(``retry_now`` re-drives dead and cancelled tasks, ``cancel`` ends unfinished
ones), so nothing is done half-way, and every batch is published to the pages.
A task that changed meanwhile (a retry of a task that started running) is
counted as skipped, not lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from realtime import live, queries
from retrying_consumers import TaskNotFound, cancel, retry_now
from retrying_consumers.models import FINAL, Status, TaskRecord

logger = logging.getLogger("realtime.bulk")

BATCH = 200
ACTIONS = ("retry", "cancel", "delete")
#: Django model permission each action needs, besides being staff.
PERMISSIONS = {
    "retry": "retrying_consumers.change_taskrecord",
    "cancel": "retrying_consumers.change_taskrecord",
    "delete": "retrying_consumers.delete_taskrecord",
}
#: The statuses each action can act on; other matching tasks are left alone.
ACTS_ON: dict[str, tuple[str, ...]] = {
    "retry": ("queued", "retrying", "dead", "cancelled"),
    "cancel": ("queued", "running", "retrying"),
    "delete": ("succeeded", "dead", "cancelled"),  # never an unfinished task
}


@dataclass
class Outcome:
    """What a bulk action did."""

    action: str
    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = {"retry": "retried", "cancel": "cancelled", "delete": "deleted"}
        text = f"{self.done} task{'s' * (self.done != 1)} {verb[self.action]}"
        if self.skipped:
            text += f", {self.skipped} skipped (changed meanwhile)"
        return text


def allowed(user: Any, action: str) -> bool:
    """Staff with the model permission the action needs."""
    return bool(
        action in PERMISSIONS and user.is_staff and user.has_perm(PERMISSIONS[action])
    )


def matching(user: Any, action: str, filters: dict[str, str]) -> QuerySet[TaskRecord]:
    """The tasks ``action`` would act on: the filter's, in the statuses it can."""
    tasks = queries.filter_tasks(
        queries.visible_tasks(user),
        filters.get("status", ""),
        filters.get("channel", ""),
        filters.get("q", ""),
        filters.get("error", ""),
    )
    return tasks.filter(status__in=ACTS_ON[action])


def count(user: Any, action: str, filters: dict[str, str]) -> int:
    """How many tasks the action would act on now."""
    return matching(user, action, filters).count()


def run(user: Any, action: str, filters: dict[str, str]) -> Outcome:
    """Do ``action`` to every matching task, in batches; return what was done.

    Batches are read by id in a fixed order after the last id done, so tasks
    that leave the filter (as each one acted on does) never shift a later batch.
    """
    if not allowed(user, action):
        raise PermissionError(f"{user} may not {action} tasks")
    outcome = Outcome(action)
    after: Any = None
    who = user.get_username()
    while True:
        ids = (
            matching(user, action, filters).order_by("pk").values_list("pk", flat=True)
        )
        if after is not None:
            ids = ids.filter(pk__gt=after)
        batch = list(ids[:BATCH])
        if not batch:
            break
        after = batch[-1]
        if action == "delete":
            _delete(batch, outcome)
        else:
            _change(batch, action, who, outcome)
    logger.info(
        "bulk %s by %s: done=%s skipped=%s filter=%s",
        action,
        who,
        outcome.done,
        outcome.skipped,
        filters,
    )
    return outcome


def _change(batch: list[Any], action: str, who: str, outcome: Outcome) -> None:
    changed = []
    for task_id in batch:
        try:
            if action == "retry":
                retry_now(task_id)
            else:
                task = cancel(task_id, reason=f"cancelled by {who} (bulk)")
                if task.status != Status.CANCELLED:
                    raise ValueError("finished meanwhile")
        except (TaskNotFound, ValueError):
            outcome.skipped += 1
            continue
        outcome.done += 1
        changed.append(task_id)
    live.announce_ids(changed)


def _delete(batch: list[Any], outcome: Outcome) -> None:
    # Status checked again in the DELETE: a task re-driven meanwhile stays.
    rows = list(TaskRecord.objects.filter(pk__in=batch, status__in=FINAL))
    ids = [task.pk for task in rows]
    TaskRecord.objects.filter(pk__in=ids, status__in=FINAL).delete()
    kept = set(TaskRecord.objects.filter(pk__in=ids).values_list("pk", flat=True))
    gone = [task for task in rows if task.pk not in kept]
    outcome.done += len(gone)
    outcome.skipped += len(batch) - len(gone)
    live.announce(gone, deleted=True)
