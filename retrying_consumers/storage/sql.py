"""The statements every task runs, in SQL: insert, claim, outcome, ring taking.

Django's ORM builds and compiles a ``filter(...).update(...)`` anew on each call:
about 270 µs on SQLite, against 25 µs for the same statement in SQL, and a
``get()`` costs more still. The insert runs once per task, and the claim, the
outcome and the taking of a retry's ring once per attempt, so they are written
here, with the same conditions as the ORM versions, ``UPDATE ... RETURNING`` in
place of a second read, and one ``UPDATE ... FROM (VALUES ...)`` per batch. The
SQL is what SQLite (3.35 and later; Django requires 3.37) and PostgreSQL both
accept; values go through each field's own database preparation, and returned
rows through the converters the ORM itself would apply, so a model built here
is the model a query would have returned.

Every function runs in the caller's transaction and connection. On PostgreSQL
the statements of a batch are sent as one (see :func:`one_statement`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from ..models import Outcome, Status, TaskRecord
from .sql_outcomes import AttemptEnd, FailedRow, Success, fail_rows, succeed_rows
from .sql_statements import SUPPORTED_VENDORS, Statements, bound_cursor, keyed
from .sql_statements import statements as _statements

__all__ = [
    "SUPPORTED_VENDORS",
    "AttemptEnd",
    "ClaimRequest",
    "FailedRow",
    "Success",
    "claim_rows",
    "copies_rows",
    "existing_ids",
    "fail_rows",
    "insert_task",
    "insert_tasks",
    "one_statement",
    "succeed_rows",
    "take_rings",
]

_PLAIN = (str, int, bool)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Attempt ``attempt`` of ``task_id``, capped at ``default_max_attempts``.

    With ``channel``, only a task of that channel is claimed: a ring that
    reached another channel's consumer must not run the task there.
    """

    task_id: uuid.UUID
    attempt: int
    default_max_attempts: int
    channel: str = ""


def one_statement(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether :func:`claim_rows`, :func:`succeed_rows`, :func:`fail_rows` and
    :func:`take_rings` run as one statement on ``using`` (PostgreSQL): atomic
    without a transaction around them, which would only add its BEGIN and
    COMMIT."""
    return _statements(connections[using]).one_statement


def insert_task(task: TaskRecord, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT ``task`` as ``task.save(force_insert=True)`` would, minus the
    ``pre_save``/``post_save`` signals (a third of the cost of ``enqueue``)."""
    s = _statements(connections[using])
    with bound_cursor(s) as cursor:
        cursor.execute(s.insert, _insert_values(s, task))
    _saved(task, using)


#: Values in one multi-row INSERT at most: under SQLite's limit of 32,766
#: bound parameters (3.32 and later).
MAX_INSERT_VALUES = 30_000


def copies_rows(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether :func:`insert_tasks` uses ``COPY`` on ``using``."""
    return _statements(connections[using]).binds_apart


def insert_tasks(tasks: Sequence[TaskRecord], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT ``tasks`` as :func:`insert_task` does, many rows per statement.

    Runs in the caller's transaction: the caller makes the batch atomic. On
    PostgreSQL with psycopg 3 the rows go in with one ``COPY``: a multi-row
    ``VALUES`` of thousands of placeholders is parsed anew by psycopg for
    each statement (most of a batch's time), and an ``INSERT ... SELECT
    FROM unnest(arrays)`` took twice as long as the ``COPY`` on the server.
    Elsewhere (SQLite, psycopg 2) multi-row ``VALUES``.
    """
    s = _statements(connections[using])
    rows = [_insert_values(s, task) for task in tasks]
    if s.binds_apart:
        _copy_rows(s, rows)
    else:
        _insert_rows(s, rows)
    for task in tasks:
        _saved(task, using)


def _insert_rows(s: Statements, rows: list[list[Any]]) -> None:
    per_statement = max(1, MAX_INSERT_VALUES // len(s.fields))
    row = f"({', '.join(['%s'] * len(s.fields))})"
    with bound_cursor(s) as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            marks = ", ".join([row] * len(chunk))
            cursor.execute(f"{s.insert_head}{marks}", [v for r in chunk for v in r])


def _copy_rows(s: Statements, rows: list[list[Any]]) -> None:
    # Django's cursor has no COPY: psycopg's own, with Django's translation
    # of database errors (an IntegrityError stays one).
    with (
        bound_cursor(s) as cursor,
        s.connection.wrap_database_errors,
        cursor.cursor.copy(s.copy_tasks) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _insert_values(s: Statements, task: TaskRecord) -> list[Any]:
    connection = s.connection
    values = []
    for field, plain, json in zip(s.fields, s.plain, s.json, strict=True):
        value = field.pre_save(task, True)
        # A text, number or key field's preparation returns str, int and bool
        # unchanged, and any field's but JSON's (whose None may mean JSON
        # null) returns None unchanged; skipping it halves the cost of the
        # INSERT.
        if value is None:
            if json:
                value = field.get_db_prep_save(value, connection)
        elif not (plain and type(value) in _PLAIN):
            value = field.get_db_prep_save(value, connection)
        values.append(value)
    return values


def _saved(task: TaskRecord, using: str) -> None:
    task._state.adding = False
    task._state.db = using


def claim_rows(
    requests: Sequence[ClaimRequest],
    *,
    worker: str,
    lease_seconds: float,
    now: datetime,
    using: str = DEFAULT_DB_ALIAS,
) -> list[TaskRecord | None]:
    """Claim each request: the claimed task, or None where it lost.

    One UPDATE for all of them; each matches only a task at its
    ``attempt - 1`` that is queued, or retrying and due, so of two requests for
    the same attempt one loses. Each winner gets its attempt record. Run inside
    a transaction unless :func:`one_statement`.
    """
    if not requests:
        return []
    s = _statements(connections[using])
    stamp = s.when(now)
    lease = s.when(now + timedelta(seconds=lease_seconds))
    keys = [s.task_id(r.task_id) for r in requests]
    params: list[Any] = [str(Status.RUNNING), worker, lease, stamp, stamp, stamp]
    for key, r in zip(keys, requests, strict=True):
        params += [key, r.attempt, r.default_max_attempts, r.channel]
    params += [*keys, str(Status.QUEUED), str(Status.RETRYING), stamp]
    sql = s.claim_head + ", ".join(["(%s, %s, %s, %s)"] * len(requests))
    sql += keyed(s.claim_tail, s.task_key, len(keys))
    if s.one_statement:
        sql = (
            f"WITH claimed AS ({sql}), started AS ({s.started_from_claimed}) "
            f"SELECT {s.columns} FROM claimed"
        )
        params += [worker, stamp, str(Outcome.RUNNING)]
    with bound_cursor(s) as cursor:
        cursor.execute(sql, params)
        won = {
            (task.id, task.attempt): task
            for task in map(s.task_from_row, cursor.fetchall())
        }
        claimed = [won.pop((r.task_id, r.attempt), None) for r in requests]
        winners = [r for r, task in zip(requests, claimed, strict=True) if task]
        if winners and not s.one_statement:
            cursor.executemany(
                s.new_attempt,
                [
                    [
                        s.task_id(r.task_id),
                        r.attempt,
                        worker,
                        stamp,
                        str(Outcome.RUNNING),
                    ]
                    for r in winners
                ],
            )
    return claimed


def existing_ids(
    task_ids: Sequence[uuid.UUID],
    using: str = DEFAULT_DB_ALIAS,
) -> set[uuid.UUID]:
    """Which of ``task_ids`` have a task row."""
    if not task_ids:
        return set()
    s = _statements(connections[using])
    marks = ", ".join(["%s"] * len(task_ids))
    with bound_cursor(s) as cursor:
        cursor.execute(f"{s.existing}({marks})", [s.task_id(i) for i in task_ids])
        return {s.convert("id", row[0]) for row in cursor.fetchall()}


def take_rings(
    task_ids: Sequence[uuid.UUID],
    *,
    ring_timeout: float,
    now: datetime,
    using: str = DEFAULT_DB_ALIAS,
) -> dict[uuid.UUID, TaskRecord]:
    """Take the rings of the due tasks among ``task_ids``, in one UPDATE.

    Each becomes (or stays) queued with its ``due_at`` moved on by
    ``ring_timeout``. Returns the tasks taken, by id. One statement: atomic
    alone.
    """
    if not task_ids:
        return {}
    s = _statements(connections[using])
    stamp = s.when(now)
    marks = ", ".join(["%s"] * len(task_ids))
    params = [
        str(Status.QUEUED),
        s.when(now + timedelta(seconds=ring_timeout)),
        stamp,
        str(Status.QUEUED),
        str(Status.RETRYING),
        stamp,
        *(s.task_id(i) for i in task_ids),
    ]
    with bound_cursor(s) as cursor:
        cursor.execute(f"{s.take_rings}({marks}){s.take_rings_tail}", params)
        tasks = [s.task_from_row(row) for row in cursor.fetchall()]
    return {task.id: task for task in tasks}
