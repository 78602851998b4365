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

from realtime import queries
from realtime.permissions import may_act
from retrying_consumers import TaskNotFound
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.ops import audit
from retrying_consumers.ops.deletion import delete_finished

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
    """Active staff with the model permission the action needs (as one by one)."""
    return action in PERMISSIONS and may_act(user, action)


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
    by = audit.Actor.of(user, "page")
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
            _delete(batch, by, outcome)
        else:
            _change(batch, action, by, outcome)
    logger.info(
        "bulk %s by %s: done=%s skipped=%s filter=%s",
        action,
        who,
        outcome.done,
        outcome.skipped,
        filters,
    )
    return outcome


def _change(batch: list[Any], action: str, by: audit.Actor, outcome: Outcome) -> None:
    # Each one recorded in its task's audit trail and announced to the pages.
    for task_id in batch:
        try:
            if action == "retry":
                audit.retry_now(task_id, by)
            else:
                task = audit.cancel(task_id, by, f"cancelled by {by.label} (bulk)")
                if task.status != Status.CANCELLED:
                    raise ValueError("finished meanwhile")
        except (TaskNotFound, ValueError):
            outcome.skipped += 1
            continue
        outcome.done += 1


def _delete(batch: list[Any], by: audit.Actor, outcome: Outcome) -> None:
    # Status checked again under the lock: a task re-driven meanwhile stays.
    deletion = delete_finished(batch, by=by)
    outcome.done += len(deletion.deleted)
    outcome.skipped += len(batch) - len(deletion.deleted)
