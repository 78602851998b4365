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
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from ..models import AttemptRecord, Outcome, Status, TaskRecord

SUPPORTED_VENDORS = ("sqlite", "postgresql")

# Where a batch statement names its rows' keys a second time, as
# ``key IN (...)`` beside the join with VALUES: the list is what a planner
# reads as a condition on the primary key's index. With the join alone, and
# statistics gathered while a young table's tasks had all succeeded,
# PostgreSQL took the queued or running rows for few and reached them through
# the indexes by status, reading thousands of index entries for every batch
# (a claim of 4 took 1.5 ms of the server's time, against 0.5 ms by key).
KEYS = "<keys>"


def _keyed(sql: str, column: str, count: int) -> str:
    """``sql`` with its ``KEYS`` mark replaced by ``column IN (count marks)``."""
    return sql.replace(KEYS, f"{column} IN ({', '.join(['%s'] * count)}) AND ", 1)


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
        self.json = [isinstance(f, models.JSONField) for f in self.fields]
        self.attnames = [f.attname for f in self.fields]
        columns = ", ".join(q(f.column) for f in self.fields)
        task = q(task_meta.db_table)
        attempt = q(attempt_meta.db_table)

        def tc(name: str) -> str:
            return q(task_meta.get_field(name).column)

        def ac(name: str) -> str:
            return q(attempt_meta.get_field(name).column)

        # The status is tested in a CASE, which no index can serve: indexes
        # by status would serve it, for every batch, when the planner takes
        # a young table's queued or running rows for few (see ``KEYS``).
        running = f"CASE {tc('status')} WHEN %s THEN TRUE ELSE FALSE END"
        # One statement for a whole batch: each VALUES row is one claim, and
        # each matches only its task at its attempt - 1, queued, or retrying
        # and due (a retry run where it fell due, with no ring in between).
        # VALUES columns are column1, column2... in SQLite and PostgreSQL alike.
        self.claim_head = (
            f"UPDATE {task} SET {tc('status')} = %s, {tc('attempt')} = v.column2, "
            f"{tc('max_attempts')} = COALESCE({tc('max_attempts')}, "
            f"{tc('drive_offset')} + v.column3), "
            f"{tc('lease_owner')} = %s, {tc('lease_expires_at')} = %s, "
            f"{tc('due_at')} = NULL, "
            f"{tc('started_at')} = COALESCE({tc('started_at')}, %s), "
            f"{tc('drive_started_at')} = COALESCE({tc('drive_started_at')}, %s), "
            f"{tc('updated_at')} = %s FROM (VALUES "
        )
        self.claim_tail = (
            f") AS v WHERE {KEYS}{tc('id')} = v.column1 "
            f"AND {tc('attempt')} = v.column2 - 1 "
            f"AND (v.column4 = '' OR {tc('channel')} = v.column4) "
            f"AND CASE {tc('status')} "
            f"WHEN %s THEN TRUE WHEN %s THEN {tc('due_at')} <= %s ELSE FALSE END "
            f"RETURNING {columns}"
        )
        self.insert_head = f"INSERT INTO {task} ({columns}) VALUES "
        self.insert = f"{self.insert_head}({', '.join(['%s'] * len(self.fields))})"
        self.copy_tasks = f"COPY {task} ({columns}) FROM STDIN"
        self.new_attempt = (
            f"INSERT INTO {attempt} ({ac('task')}, {ac('number')}, {ac('worker')}, "
            f"{ac('started_at')}, {ac('finished_at')}, {ac('outcome')}, "
            f"{ac('error_class')}, {ac('error_message')}, {ac('traceback')}, "
            f"{ac('decision')}, {ac('next_attempt_at')}) "
            "VALUES (%s, %s, %s, %s, NULL, %s, '', '', '', '', NULL)"
        )
        self.existing = f"SELECT {tc('id')} FROM {task} WHERE {tc('id')} IN "
        result_value = (
            "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
        )
        self.success_row = f"(%s, %s, {result_value})"
        self.succeed_head = (
            f"UPDATE {task} SET {tc('status')} = %s, {tc('result')} = v.column3, "
            f"{tc('finished_at')} = %s, {tc('updated_at')} = %s, "
            f"{tc('lease_owner')} = '', {tc('lease_expires_at')} = NULL, "
            f"{tc('due_at')} = NULL, {tc('reason')} = '' FROM (VALUES "
        )
        self.succeed_tail = (
            f") AS v WHERE {KEYS}{tc('id')} = v.column1 AND {running} "
            f"AND {tc('attempt')} = v.column2 AND {tc('lease_owner')} = %s "
            f"RETURNING {tc('id')}"
        )
        # PostgreSQL types a VALUES column from its values: one of NULLs only
        # would be text, so times are cast; SQLite would make them numbers.
        when = (
            "CAST(%s AS timestamp with time zone)"
            if connection.vendor == "postgresql"
            else "%s"
        )
        self.fail_head = (
            f"UPDATE {task} SET {tc('status')} = v.column3, "
            f"{tc('due_at')} = v.column4, {tc('finished_at')} = v.column5, "
            f"{tc('updated_at')} = %s, "
            f"{tc('lease_owner')} = '', {tc('lease_expires_at')} = NULL, "
            f"{tc('error_class')} = v.column6, {tc('error_message')} = v.column7, "
            f"{tc('reason')} = v.column8 FROM (VALUES "
        )
        self.fail_row = f"(%s, %s, %s, {when}, {when}, %s, %s, %s)"
        self.fail_tail = (
            f") AS v WHERE {KEYS}{tc('id')} = v.column1 AND {running} "
            f"AND {tc('attempt')} = v.column2 "
        )
        self.fail_ours = f"AND {tc('lease_owner')} = %s RETURNING {columns}"
        self.fail_expired = f"AND {tc('lease_expires_at')} <= %s RETURNING {columns}"
        self.close_head = (
            f"UPDATE {attempt} SET {ac('finished_at')} = %s, "
            f"{ac('outcome')} = v.column3, {ac('error_class')} = v.column4, "
            f"{ac('error_message')} = v.column5, {ac('traceback')} = v.column6, "
            f"{ac('decision')} = v.column7, {ac('next_attempt_at')} = v.column8 "
            "FROM (VALUES "
        )
        self.close_row = f"(%s, %s, %s, %s, %s, %s, %s, {when})"
        self.close_tail = (
            f") AS v WHERE {KEYS}{ac('task')} = v.column1 "
            f"AND {ac('number')} = v.column2"
        )
        # PostgreSQL: the failed attempts' records closed in the statement
        # that records the failures (``failed`` is that UPDATE's RETURNING):
        # ours with the decision; with a worker, its late ones without.
        self.close_failed_head = (
            f"UPDATE {attempt} SET {ac('finished_at')} = %s, "
            f"{ac('outcome')} = v.column3, {ac('error_class')} = v.column4, "
            f"{ac('error_message')} = v.column5, {ac('traceback')} = v.column6, "
            f"{ac('decision')} = CASE WHEN failed.{tc('id')} IS NULL THEN '' "
            "ELSE v.column7 END, "
            f"{ac('next_attempt_at')} = CASE WHEN failed.{tc('id')} IS NULL "
            "THEN NULL ELSE v.column8 END FROM (VALUES "
        )
        self.close_failed_tail = (
            f") AS v LEFT JOIN failed ON failed.{tc('id')} = v.column1 "
            f"WHERE {KEYS}{attempt}.{ac('task')} = v.column1 "
            f"AND {attempt}.{ac('number')} = v.column2 "
            f"AND (failed.{tc('id')} IS NOT NULL"
        )
        self.close_failed_late = (
            f" OR ({attempt}.{ac('worker')} = %s "
            f"AND {attempt}.{ac('finished_at')} IS NULL))"
        )
        self.close_orphan = (
            f"UPDATE {attempt} SET {ac('finished_at')} = %s, {ac('outcome')} = %s, "
            f"{ac('error_class')} = %s, {ac('error_message')} = %s, "
            f"{ac('traceback')} = %s, {ac('decision')} = %s, "
            f"{ac('next_attempt_at')} = %s "
            f"WHERE {ac('task')} = %s AND {ac('number')} = %s "
            f"AND {ac('worker')} = %s AND {ac('finished_at')} IS NULL"
        )
        self.take_rings = (
            f"UPDATE {task} SET {tc('status')} = %s, {tc('due_at')} = %s, "
            f"{tc('updated_at')} = %s WHERE CASE WHEN {tc('status')} IN (%s, %s) "
            f"THEN {tc('due_at')} <= %s ELSE FALSE END AND {tc('id')} IN "
        )
        self.take_rings_tail = f" RETURNING {columns}"
        # Closes the attempt records of successes: ours, and late ones of this
        # worker that nothing closed yet (a lost worker's record is closed).
        self.finish_head = (
            f"UPDATE {attempt} SET {ac('finished_at')} = %s, {ac('outcome')} = %s "
            "FROM (VALUES "
        )
        self.finish_tail = (
            f") AS v WHERE {KEYS}{ac('task')} = v.column1 "
            f"AND {ac('number')} = v.column2 "
            f"AND {ac('worker')} = %s AND {ac('finished_at')} IS NULL"
        )
        # PostgreSQL runs a batch's statements as one, in data-modifying WITH
        # clauses: atomic alone, so no BEGIN and COMMIT round trips either.
        self.one_statement = connection.vendor == "postgresql"
        # psycopg 3 (Django's psycopg2 backend keeps Django's cursors).
        self.binds_apart = connection.vendor == "postgresql" and _psycopg3()
        self.started_from_claimed = (
            f"INSERT INTO {attempt} ({ac('task')}, {ac('number')}, {ac('worker')}, "
            f"{ac('started_at')}, {ac('finished_at')}, {ac('outcome')}, "
            f"{ac('error_class')}, {ac('error_message')}, {ac('traceback')}, "
            f"{ac('decision')}, {ac('next_attempt_at')}) "
            f"SELECT {tc('id')}, {tc('attempt')}, %s, %s, NULL, %s, '', '', '', '', "
            "NULL FROM claimed"
        )
        self.columns = columns
        self.task_key = tc("id")
        self.attempt_key = ac("task")
        self.attempt_key_qualified = f"{attempt}.{ac('task')}"
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


def _psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


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
    with _bound_cursor(s) as cursor:
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


def _insert_rows(s: _Statements, rows: list[list[Any]]) -> None:
    per_statement = max(1, MAX_INSERT_VALUES // len(s.fields))
    row = f"({', '.join(['%s'] * len(s.fields))})"
    with _bound_cursor(s) as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            marks = ", ".join([row] * len(chunk))
            cursor.execute(f"{s.insert_head}{marks}", [v for r in chunk for v in r])


def _copy_rows(s: _Statements, rows: list[list[Any]]) -> None:
    # Django's cursor has no COPY: psycopg's own, with Django's translation
    # of database errors (an IntegrityError stays one).
    with (
        _bound_cursor(s) as cursor,
        s.connection.wrap_database_errors,
        cursor.cursor.copy(s.copy_tasks) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _insert_values(s: _Statements, task: TaskRecord) -> list[Any]:
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


def _bound_cursor(s: _Statements) -> Any:
    """A cursor that sends the values apart from the statement, on PostgreSQL.

    Django's psycopg cursors bind on the client: every value is quoted into
    the statement's text, which the server then parses back. For the task
    INSERT that was the biggest part of a producer's CPU in ``enqueue``; for
    a batch of claims, a statement with dozens of values, it tripled the
    client's CPU and the server's time (measured in ``docs/benchmarks.md``).
    The statements are not prepared (connection poolers in transaction mode
    could not keep them), so the server still plans each with its values.
    Django's wrapper is kept: execute wrappers, error translation and the
    query log work as with ``connection.cursor()``.
    """
    connection = s.connection
    if not s.binds_apart:
        return connection.cursor()
    import psycopg

    connection.ensure_connection()
    connection.validate_thread_sharing()
    cursor = psycopg.Cursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)


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
    sql += _keyed(s.claim_tail, s.task_key, len(keys))
    if s.one_statement:
        sql = (
            f"WITH claimed AS ({sql}), started AS ({s.started_from_claimed}) "
            f"SELECT {s.columns} FROM claimed"
        )
        params += [worker, stamp, str(Outcome.RUNNING)]
    with _bound_cursor(s) as cursor:
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
    with _bound_cursor(s) as cursor:
        cursor.execute(f"{s.existing}({marks})", [s.task_id(i) for i in task_ids])
        return {s.convert("id", row[0]) for row in cursor.fetchall()}


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
    :func:`one_statement`.
    """
    if not successes:
        return []
    s = _statements(connections[using])
    stamp = s.when(now)
    keys = [s.task_id(x.task_id) for x in successes]
    params: list[Any] = [str(Status.SUCCEEDED), stamp, stamp]
    for key, x in zip(keys, successes, strict=True):
        params += [key, x.attempt, s.result(x.result)]
    params += [*keys, str(Status.RUNNING), worker]
    sql = s.succeed_head + ", ".join([s.success_row] * len(successes))
    sql += _keyed(s.succeed_tail, s.task_key, len(keys))
    finish = s.finish_head + ", ".join(["(%s, %s)"] * len(successes))
    finish += _keyed(s.finish_tail, s.attempt_key, len(keys))
    finish_params = [stamp, str(Outcome.SUCCEEDED)]
    for key, x in zip(keys, successes, strict=True):
        finish_params += [key, x.attempt]
    finish_params += [*keys, worker]
    with _bound_cursor(s) as cursor:
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
    :func:`one_statement`.
    """
    if not failures:
        return []
    s = _statements(connections[using])
    stamp = s.when(now)

    def when(value: datetime | None) -> Any:
        return None if value is None else s.when(value)

    params: list[Any] = [stamp]
    for f in failures:
        params += [
            s.task_id(f.task_id),
            f.attempt,
            f.status,
            when(f.due_at),
            when(f.finished_at),
            f.end.error_class,
            f.end.error_message,
            f.reason,
        ]
    keys = [s.task_id(f.task_id) for f in failures]
    params += [*keys, str(Status.RUNNING), stamp if worker is None else worker]
    rows = ", ".join([s.fail_row] * len(failures))
    tail = s.fail_expired if worker is None else s.fail_ours
    sql = s.fail_head + rows + _keyed(s.fail_tail, s.task_key, len(keys)) + tail

    def closing(ended: Sequence[FailedRow]) -> list[Any]:
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
                when(f.end.next_attempt_at),
            )
        ]

    with _bound_cursor(s) as cursor:
        if s.one_statement:
            close = (
                s.close_failed_head
                + ", ".join([s.close_row] * len(failures))
                + _keyed(s.close_failed_tail, s.attempt_key_qualified, len(keys))
                + (")" if worker is None else s.close_failed_late)
            )
            params += [stamp, *closing(failures), *keys]
            if worker is not None:
                params.append(worker)
            cursor.execute(
                f"WITH failed AS ({sql}), closed AS ({close}) "
                f"SELECT {s.columns} FROM failed",
                params,
            )
        else:
            cursor.execute(sql, params)
        won = {task.id: task for task in map(s.task_from_row, cursor.fetchall())}
        done = [won.pop(f.task_id, None) for f in failures]
        if s.one_statement:
            return done
        ended = [(f, task is not None) for f, task in zip(failures, done, strict=True)]
        mine = [f for f, ours in ended if ours]
        if mine:
            cursor.execute(
                s.close_head
                + ", ".join([s.close_row] * len(mine))
                + _keyed(s.close_tail, s.attempt_key, len(mine)),
                [stamp, *closing(mine), *(s.task_id(f.task_id) for f in mine)],
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
    return done


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
    with _bound_cursor(s) as cursor:
        cursor.execute(f"{s.take_rings}({marks}){s.take_rings_tail}", params)
        tasks = [s.task_from_row(row) for row in cursor.fetchall()]
    return {task.id: task for task in tasks}
