"""The outcome statements of :mod:`.sql`: successes and failures, in batches.

Each batch is one UPDATE of the tasks and one of their attempt records (on
PostgreSQL one statement, see :func:`~.sql_statements.Statements`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from ..models import Outcome, Status, TaskRecord
from .sql_statements import Statements, bound_cursor, keyed, statements


@dataclass(frozen=True, slots=True)
class Success:
    """The successful end of attempt ``attempt`` of ``task_id``."""

    task_id: uuid.UUID
    attempt: int
    result: Any = None


def succeed_rows(
    successes: Sequence[Success],
    *,
    worker: str,
    now: datetime,
    using: str = DEFAULT_DB_ALIAS,
) -> list[bool]:
    """Record each success; False where the attempt was no longer ``worker``'s.

    One UPDATE of the tasks and one of their attempt records for the whole
    batch. A late success still closes its own attempt record (as an orphan),
    so the attempt's history is complete. Run inside a transaction unless
    :func:`.sql.one_statement`.
    """
    if not successes:
        return []
    s = statements(connections[using])
    stamp = s.when(now)
    keys = [s.task_id(x.task_id) for x in successes]
    params: list[Any] = [str(Status.SUCCEEDED), stamp, stamp]
    for key, x in zip(keys, successes, strict=True):
        params += [key, x.attempt, s.result(x.result)]
    params += [*keys, str(Status.RUNNING), worker]
    sql = s.succeed_head + ", ".join([s.success_row] * len(successes))
    sql += keyed(s.succeed_tail, s.task_key, len(keys))
    finish = s.finish_head + ", ".join(["(%s, %s)"] * len(successes))
    finish += keyed(s.finish_tail, s.attempt_key, len(keys))
    finish_params = [stamp, str(Outcome.SUCCEEDED)]
    for key, x in zip(keys, successes, strict=True):
        finish_params += [key, x.attempt]
    finish_params += [*keys, worker]
    with bound_cursor(s) as cursor:
        if s.one_statement:
            cursor.execute(
                f"WITH done AS ({sql}), closed AS ({finish}) SELECT * FROM done",
                params + finish_params,
            )
        else:
            cursor.execute(sql, params)
        recorded = {s.convert("id", row[0]) for row in cursor.fetchall()}
        if not s.one_statement:
            cursor.execute(finish, finish_params)
    return [x.task_id in recorded for x in successes]


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as its attempt record keeps it."""

    outcome: str
    error_class: str
    error_message: str
    traceback: str
    decision: str
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class FailedRow:
    """A failed attempt to record, and the task's state after it."""

    task_id: uuid.UUID
    attempt: int
    status: str
    due_at: datetime | None
    finished_at: datetime | None
    reason: str
    end: AttemptEnd


def fail_rows(
    failures: Sequence[FailedRow],
    *,
    worker: str | None,
    now: datetime,
    using: str = DEFAULT_DB_ALIAS,
) -> list[TaskRecord | None]:
    """Record failed attempts: each task as it is now, or None if not ours.

    One UPDATE of the tasks and one of their attempt records for the whole
    batch. ``worker=None`` matches any lease owner whose lease has expired (a
    lost worker). A late failure of ``worker`` still closes its own attempt
    record, without a decision. Run inside a transaction unless
    :func:`.sql.one_statement`.
    """
    if not failures:
        return []
    s = statements(connections[using])
    stamp = s.when(now)
    keys = [s.task_id(f.task_id) for f in failures]
    sql, params = _fail_update(s, failures, keys, worker, stamp)
    with bound_cursor(s) as cursor:
        if s.one_statement:
            close = (
                s.close_failed_head
                + ", ".join([s.close_row] * len(failures))
                + keyed(s.close_failed_tail, s.attempt_key_qualified, len(keys))
                + (")" if worker is None else s.close_failed_late)
            )
            params += [stamp, *_closing(s, failures), *keys]
            if worker is not None:
                params.append(worker)
            cursor.execute(
                f"WITH failed AS ({sql}), closed AS ({close}) "
                f"SELECT {s.columns} FROM failed",
                params,
            )
            return _won(s, cursor, failures)
        cursor.execute(sql, params)
        done = _won(s, cursor, failures)
        _close_failed(s, cursor, failures, done, worker, stamp)
    return done


def _fail_update(
    s: Statements,
    failures: Sequence[FailedRow],
    keys: list[Any],
    worker: str | None,
    stamp: Any,
) -> tuple[str, list[Any]]:
    """The UPDATE of the failed attempts' tasks, and its values."""
    params: list[Any] = [stamp]
    for f in failures:
        params += [
            s.task_id(f.task_id),
            f.attempt,
            f.status,
            _when(s, f.due_at),
            _when(s, f.finished_at),
            f.end.error_class,
            f.end.error_message,
            f.reason,
        ]
    params += [*keys, str(Status.RUNNING), stamp if worker is None else worker]
    rows = ", ".join([s.fail_row] * len(failures))
    tail = s.fail_expired if worker is None else s.fail_ours
    sql = s.fail_head + rows + keyed(s.fail_tail, s.task_key, len(keys)) + tail
    return sql, params


def _won(
    s: Statements, cursor: Any, failures: Sequence[FailedRow]
) -> list[TaskRecord | None]:
    """The tasks the UPDATE returned, in the order of ``failures`` (None: lost)."""
    won = {task.id: task for task in map(s.task_from_row, cursor.fetchall())}
    return [won.pop(f.task_id, None) for f in failures]


def _close_failed(
    s: Statements,
    cursor: Any,
    failures: Sequence[FailedRow],
    done: list[TaskRecord | None],
    worker: str | None,
    stamp: Any,
) -> None:
    """Close the attempt records of the failures recorded (with the decision)
    and, with a ``worker``, its late ones (without)."""
    ended = [(f, task is not None) for f, task in zip(failures, done, strict=True)]
    mine = [f for f, ours in ended if ours]
    if mine:
        cursor.execute(
            s.close_head
            + ", ".join([s.close_row] * len(mine))
            + keyed(s.close_tail, s.attempt_key, len(mine)),
            [stamp, *_closing(s, mine), *(s.task_id(f.task_id) for f in mine)],
        )
    if worker is not None:
        for f, ours in ended:
            if not ours:
                closed = [stamp, f.end.outcome, f.end.error_class]
                closed += [f.end.error_message, f.end.traceback, "", None]
                cursor.execute(
                    s.close_orphan,
                    [*closed, s.task_id(f.task_id), f.attempt, worker],
                )


def _closing(s: Statements, ended: Sequence[FailedRow]) -> list[Any]:
    """The VALUES of the attempt records that ``ended`` close."""
    return [
        v
        for f in ended
        for v in (
            s.task_id(f.task_id),
            f.attempt,
            f.end.outcome,
            f.end.error_class,
            f.end.error_message,
            f.end.traceback,
            f.end.decision,
            _when(s, f.end.next_attempt_at),
        )
    ]


def _when(s: Statements, value: datetime | None) -> Any:
    return None if value is None else s.when(value)
