"""The statements every task runs, in SQL: the insert, the claim, the success.

Django's ORM builds and compiles a ``filter(...).update(...)`` anew on each call:
about 270 µs on SQLite, against 25 µs for the same statement in SQL, and a
``get()`` costs more still. The insert runs once per task, and the claim and
the success record once per attempt, so they are written here, with the same
conditions as the ORM versions and ``UPDATE ... RETURNING`` in place of a second
read. The SQL is what SQLite
(3.35 and later; Django requires 3.37) and PostgreSQL both accept; values go
through each field's own database preparation, and returned rows through the
converters the ORM itself would apply, so a model built here is the model a
query would have returned.

Every function runs in the caller's transaction and connection.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from .models import AttemptRecord, Outcome, Status, TaskRecord

SUPPORTED_VENDORS = ("sqlite", "postgresql")


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Attempt ``attempt`` of ``task_id``, capped at ``default_max_attempts``."""

    task_id: uuid.UUID
    attempt: int
    default_max_attempts: int


@dataclass(frozen=True, slots=True)
class Success:
    """The successful end of attempt ``attempt`` of ``task_id``."""

    task_id: uuid.UUID
    attempt: int
    result: Any = None


class _Statements:
    """SQL and value converters for one database connection."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        q = connection.ops.quote_name
        task_meta = TaskRecord._meta
        attempt_meta = AttemptRecord._meta
        self.fields = list(task_meta.concrete_fields)
        self.plain = [isinstance(f, _PLAIN_FIELDS) for f in self.fields]
        self.attnames = [f.attname for f in self.fields]
        columns = ", ".join(q(f.column) for f in self.fields)
        task = q(task_meta.db_table)
        attempt = q(attempt_meta.db_table)

        def tc(name: str) -> str:
            return q(task_meta.get_field(name).column)

        def ac(name: str) -> str:
            return q(attempt_meta.get_field(name).column)

        self.claim = (
            f"UPDATE {task} SET {tc('status')} = %s, {tc('attempt')} = %s, "
            f"{tc('max_attempts')} = COALESCE({tc('max_attempts')}, "
            f"{tc('drive_offset')} + %s), "
            f"{tc('lease_owner')} = %s, {tc('lease_expires_at')} = %s, "
            f"{tc('due_at')} = NULL, "
            f"{tc('started_at')} = COALESCE({tc('started_at')}, %s), "
            f"{tc('drive_started_at')} = COALESCE({tc('drive_started_at')}, %s), "
            f"{tc('updated_at')} = %s "
            f"WHERE {tc('id')} = %s AND {tc('status')} = %s AND {tc('attempt')} = %s "
            f"RETURNING {columns}"
        )
        self.insert = (
            f"INSERT INTO {task} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(self.fields))})"
        )
        self.new_attempt = (
            f"INSERT INTO {attempt} ({ac('task')}, {ac('number')}, {ac('worker')}, "
            f"{ac('started_at')}, {ac('finished_at')}, {ac('outcome')}, "
            f"{ac('error_class')}, {ac('error_message')}, {ac('traceback')}, "
            f"{ac('decision')}, {ac('next_attempt_at')}) "
            "VALUES (%s, %s, %s, %s, NULL, %s, '', '', '', '', NULL)"
        )
        self.existing = f"SELECT {tc('id')} FROM {task} WHERE {tc('id')} IN "
        self.succeed = (
            f"UPDATE {task} SET {tc('status')} = %s, {tc('result')} = %s, "
            f"{tc('finished_at')} = %s, {tc('updated_at')} = %s, "
            f"{tc('lease_owner')} = '', {tc('lease_expires_at')} = NULL, "
            f"{tc('due_at')} = NULL, {tc('reason')} = '' "
            f"WHERE {tc('id')} = %s AND {tc('status')} = %s AND {tc('attempt')} = %s "
            f"AND {tc('lease_owner')} = %s"
        )
        self.finish_attempt = (
            f"UPDATE {attempt} SET {ac('finished_at')} = %s, {ac('outcome')} = %s "
            f"WHERE {ac('task')} = %s AND {ac('number')} = %s"
        )
        self.finish_orphan = (
            f"{self.finish_attempt} AND {ac('worker')} = %s "
            f"AND {ac('finished_at')} IS NULL"
        )
        self.converters: list[tuple[Any, list[Callable[..., Any]]]] = []
        for field in self.fields:
            col = field.get_col(task_meta.db_table)
            found = connection.ops.get_db_converters(col) + col.get_db_converters(
                connection
            )
            self.converters.append((col, found))
        self._id = task_meta.pk
        self._result = task_meta.get_field("result")

    def task_id(self, value: uuid.UUID) -> Any:
        return self._id.get_db_prep_value(value, self.connection)

    def when(self, value: datetime) -> Any:
        return self.connection.ops.adapt_datetimefield_value(value)

    def result(self, value: Any) -> Any:
        return self._result.get_db_prep_value(value, self.connection)

    def convert(self, attname: str, value: Any) -> Any:
        """A task column's value as read from the database, as the ORM reads it."""
        col, converters = self.converters[self.attnames.index(attname)]
        for converter in converters:
            value = converter(value, col, self.connection)
        return value

    def task_from_row(self, row: Sequence[Any]) -> TaskRecord:
        values = []
        for value, (col, converters) in zip(row, self.converters, strict=True):
            for converter in converters:
                value = converter(value, col, self.connection)
            values.append(value)
        return TaskRecord.from_db(self.connection.alias, self.attnames, values)


_PLAIN = (str, int, bool)
_PLAIN_FIELDS = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.BooleanField,
    models.ForeignKey,
)

_cache: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Statements] = (
    weakref.WeakKeyDictionary()
)


def _statements(connection: BaseDatabaseWrapper) -> _Statements:
    found = _cache.get(connection)
    if found is None:
        if connection.vendor not in SUPPORTED_VENDORS:
            raise NotImplementedError(
                f"retrying_consumers stores tasks in SQLite or PostgreSQL, "
                f"not {connection.vendor}"
            )
        found = _cache[connection] = _Statements(connection)
    return found


def insert_task(task: TaskRecord, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT ``task`` as ``task.save(force_insert=True)`` would, minus the
    ``pre_save``/``post_save`` signals (a third of the cost of ``enqueue``)."""
    s = _statements(connections[using])
    connection = s.connection
    values = []
    for field, plain in zip(s.fields, s.plain, strict=True):
        value = field.pre_save(task, True)
        # A text, number or key field's preparation returns None, str, int and
        # bool unchanged; skipping it halves the cost of the INSERT.
        if value is None or not (plain and type(value) in _PLAIN):
            value = field.get_db_prep_save(value, connection)
        values.append(value)
    with connection.cursor() as cursor:
        cursor.execute(s.insert, values)
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
    """Claim each request in turn: the claimed task, or None where it lost.

    A claim matches only a task queued at ``attempt - 1``, so of two requests
    for the same attempt the second loses. Each winner gets its attempt record.
    Run inside a transaction.
    """
    s = _statements(connections[using])
    connection = s.connection
    claimed: list[TaskRecord | None] = []
    stamp = s.when(now)
    lease = s.when(now + timedelta(seconds=lease_seconds))
    with connection.cursor() as cursor:
        for request in requests:
            cursor.execute(
                s.claim,
                [
                    str(Status.RUNNING),
                    request.attempt,
                    request.default_max_attempts,
                    worker,
                    lease,
                    stamp,
                    stamp,
                    stamp,
                    s.task_id(request.task_id),
                    str(Status.QUEUED),
                    request.attempt - 1,
                ],
            )
            row = cursor.fetchone()
            claimed.append(None if row is None else s.task_from_row(row))
        won = [r for r, task in zip(requests, claimed, strict=True) if task]
        if won:
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
                    for r in won
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
    connection = s.connection
    marks = ", ".join(["%s"] * len(task_ids))
    with connection.cursor() as cursor:
        cursor.execute(f"{s.existing}({marks})", [s.task_id(i) for i in task_ids])
        return {s.convert("id", row[0]) for row in cursor.fetchall()}


def succeed_rows(
    successes: Iterable[Success],
    *,
    worker: str,
    now: datetime,
    using: str = DEFAULT_DB_ALIAS,
) -> list[bool]:
    """Record each success; False where the attempt was no longer ``worker``'s.

    A late success still closes its own attempt record (as an orphan), so the
    attempt's history is complete. Run inside a transaction.
    """
    s = _statements(connections[using])
    connection = s.connection
    stamp = s.when(now)
    done: list[bool] = []
    with connection.cursor() as cursor:
        for success in successes:
            task_id = s.task_id(success.task_id)
            cursor.execute(
                s.succeed,
                [
                    str(Status.SUCCEEDED),
                    s.result(success.result),
                    stamp,
                    stamp,
                    task_id,
                    str(Status.RUNNING),
                    success.attempt,
                    worker,
                ],
            )
            ours = cursor.rowcount == 1
            params = [stamp, str(Outcome.SUCCEEDED), task_id, success.attempt]
            if ours:
                cursor.execute(s.finish_attempt, params)
            else:
                cursor.execute(s.finish_orphan, [*params, worker])
            done.append(ours)
    return done
