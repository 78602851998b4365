"""How tasks and attempts look in ``manage.py tasks``: JSON data and text."""

from __future__ import annotations

import json
from typing import Any

from retrying_consumers.management.tables import clip, table, when
from retrying_consumers.models import AttemptRecord, Status, TaskRecord


def task_data(task: TaskRecord) -> dict[str, Any]:
    """A task as JSON-ready data, payload and result included."""
    return {
        **task.to_event(),
        "payload": task.payload,
        "result": task.result,
        "started_at": task.started_at.isoformat() if task.started_at else None,
        "due_at": task.due_at.isoformat() if task.due_at else None,
        "parent_id": str(task.parent_id) if task.parent_id else None,
        "group_id": str(task.group_id) if task.group_id else None,
        "followups": task.followups,
        "children": [str(pk) for pk in children_of(task)],
    }


def children_of(task: TaskRecord) -> list[Any]:
    """The follow-up tasks this task (or the group it ended) enqueued."""
    return list(
        TaskRecord.objects.filter(parent_id=task.pk)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )


def attempt_data(attempt: AttemptRecord) -> dict[str, Any]:
    """An attempt as JSON-ready data, traceback included."""
    return {
        "number": attempt.number,
        "outcome": attempt.outcome,
        "worker": attempt.worker,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "error_class": attempt.error_class,
        "error_message": attempt.error_message,
        "decision": attempt.decision,
        "next_attempt_at": _iso(attempt.next_attempt_at),
        "traceback": attempt.traceback,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def show_text(task: TaskRecord, attempts: list[AttemptRecord]) -> str:
    """A task, its attempts and their tracebacks, as text."""
    fields = [
        ("id", task.id),
        ("status", task.status),
        ("channel", task.channel),
        ("type", task.type),
        ("attempt", f"{task.attempt}/{task.max_attempts or '?'}"),
        ("reason", task.reason or "-"),
        (
            "error",
            f"{task.error_class}: {task.error_message}" if task.error_class else "-",
        ),
        ("next attempt", when(task.due_at) if task.status == Status.RETRYING else "-"),
        ("progress", _progress(task)),
        ("created", when(task.created_at)),
        ("finished", when(task.finished_at)),
        ("payload", json.dumps(task.payload, sort_keys=True)),
        ("result", json.dumps(task.result, sort_keys=True)),
    ]
    if task.parent_id:
        fields.append(("parent", task.parent_id))
    if task.group_id:
        fields.append(("group", task.group_id))
    if task.followups:
        then = ", ".join(f"{f['channel']}:{f['type']}" for f in task.followups)
        fields.append(("then", then))
    if children := children_of(task):
        fields.append(("follow-ups", ", ".join(str(pk) for pk in children)))
    lines = [f"{name:>12}  {value}" for name, value in fields]
    rows = [
        [
            a.number,
            a.outcome,
            a.worker or "-",
            when(a.started_at),
            when(a.finished_at),
            clip(f"{a.error_class}: {a.error_message}") if a.error_class else "",
        ]
        for a in attempts
    ]
    lines += [
        "",
        table(["#", "outcome", "worker", "started", "finished", "error"], rows)
        if rows
        else "no attempts yet",
    ]
    for a in attempts:
        if a.traceback:
            lines += ["", f"attempt {a.number} traceback:", a.traceback.rstrip()]
    return "\n".join(lines)


def _progress(task: TaskRecord) -> str:
    if task.progress_current is None:
        return "-"
    total = f"/{task.progress_total:g}" if task.progress_total is not None else ""
    return f"{task.progress_current:g}{total} {task.progress_message}".strip()
