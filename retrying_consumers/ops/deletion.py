"""Deleting task records by hand: finished tasks only, checked under a lock.

Whoever deletes (the admin, the dashboard page, your own code) goes through
:func:`delete_finished`, so that accepted work never vanishes silently: a
queued, running or retrying task is refused, even if it was re-driven between
the moment someone chose it and the moment the delete runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..models import FINAL, TaskRecord
from ..storage.writers import writing


@dataclass(frozen=True)
class Deletion:
    """What :func:`delete_finished` did: ids deleted, and ids left alone."""

    deleted: tuple[Any, ...] = ()
    unfinished: tuple[Any, ...] = ()
    missing: tuple[Any, ...] = ()


def delete_finished(task_ids: Iterable[Any], by: Any = None) -> Deletion:
    """Delete the tasks among ``task_ids`` that are finished, with their attempts.

    The rows are locked first (PostgreSQL; SQLite's IMMEDIATE transaction holds
    the write lock anyway), so a concurrent ``retry_now`` either waits and then
    finds the task gone, or wins and the task is left alone as unfinished.
    With ``by`` (an :class:`~retrying_consumers.audit.Actor`), each deletion is
    recorded in its task's audit trail in the same transaction, and announced
    to the task's open pages once it commits.
    """
    from . import audit

    wanted = list(dict.fromkeys(task_ids))
    with writing():
        found = dict(
            TaskRecord.objects.filter(pk__in=wanted)
            .select_for_update(of=("self",))
            .values_list("pk", "status")
        )
        finished = [pk for pk, status in found.items() if status in FINAL]
        if finished and by is not None:
            for task in TaskRecord.objects.filter(pk__in=finished):
                audit.recorded(task, by)
                audit.announce_deleted(task)
        if finished:
            TaskRecord.objects.filter(pk__in=finished, status__in=FINAL).only(
                "pk"
            ).delete()
    return Deletion(
        deleted=tuple(finished),
        unfinished=tuple(pk for pk, status in found.items() if status not in FINAL),
        missing=tuple(pk for pk in _as_pks(wanted) if pk not in found),
    )


def _as_pks(values: list[Any]) -> list[Any]:
    pk = TaskRecord._meta.pk
    assert pk is not None
    return [pk.to_python(value) for value in values]
