"""The SQL of :mod:`.sql`, built once per database connection.

:class:`Statements` holds each statement's text for one connection (quoted
names, the vendor's casts) and the converters that make a returned row the
model a query would have returned. Its groups follow the task's way: claims,
inserts, successes, failures and the closing of attempt records, rings.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from ..models import AttemptRecord, TaskRecord

SUPPORTED_VENDORS = ("sqlite", "postgresql")

# Where a batch statement names its rows' keys a second time, as
# ``key IN (...)`` beside the join with VALUES: the list is what a planner
# reads as a condition on the primary key's index. With the join alone, and
# statistics gathered while a young table's tasks had all succeeded,
# PostgreSQL took the queued or running rows for few and reached them through
# the indexes by status, reading thousands of index entries for every batch
# (a claim of 4 took 1.5 ms of the server's time, against 0.5 ms by key).
KEYS = "<keys>"


def keyed(sql: str, column: str, count: int) -> str:
    """``sql`` with its ``KEYS`` mark replaced by ``column IN (count marks)``."""
    return sql.replace(KEYS, f"{column} IN ({', '.join(['%s'] * count)}) AND ", 1)


class _Names:
    """A connection's quoted table and column names, and its vendor's casts."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.q = q = connection.ops.quote_name
        self.task = q(TaskRecord._meta.db_table)
        self.attempt = q(AttemptRecord._meta.db_table)
        self.columns = ", ".join(q(f.column) for f in TaskRecord._meta.concrete_fields)
        # The status is tested in a CASE, which no index can serve: indexes
        # by status would serve it, for every batch, when the planner takes
        # a young table's queued or running rows for few (see ``KEYS``).
        self.running = f"CASE {self.tc('status')} WHEN %s THEN TRUE ELSE FALSE END"
        # PostgreSQL types a VALUES column from its values: one of NULLs only
        # would be text, so times are cast; SQLite would make them numbers.
        self.when = (
            "CAST(%s AS timestamp with time zone)"
            if connection.vendor == "postgresql"
            else "%s"
        )
        self.result_value = (
            "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
        )

    def tc(self, name: str) -> str:
        """A task column's quoted name."""
        return self.q(TaskRecord._meta.get_field(name).column)

    def ac(self, name: str) -> str:
        """An attempt record column's quoted name."""
        return self.q(AttemptRecord._meta.get_field(name).column)


class Statements:
    """SQL and value converters for one database connection."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        task_meta = TaskRecord._meta
        self.fields = list(task_meta.concrete_fields)
        self.plain = [isinstance(f, _PLAIN_FIELDS) for f in self.fields]
        self.json = [isinstance(f, models.JSONField) for f in self.fields]
        self.attnames = [f.attname for f in self.fields]
        # PostgreSQL runs a batch's statements as one, in data-modifying WITH
        # clauses: atomic alone, so no BEGIN and COMMIT round trips either.
        self.one_statement = connection.vendor == "postgresql"
        # psycopg 3 (Django's psycopg2 backend keeps Django's cursors).
        self.binds_apart = connection.vendor == "postgresql" and _psycopg3()
        n = _Names(connection)
        self._claims(n)
        self._inserts(n)
        self._successes(n)
        self._failures(n)
        self._closings(n)
        self._rings(n)
        self.columns = n.columns
        self.task_key = n.tc("id")
        self.attempt_key = n.ac("task")
        self.attempt_key_qualified = f"{n.attempt}.{n.ac('task')}"
        self.converters: list[tuple[Any, list[Callable[..., Any]]]] = []
        for field in self.fields:
            col = field.get_col(task_meta.db_table)
            found = connection.ops.get_db_converters(col) + col.get_db_converters(
                connection
            )
            self.converters.append((col, found))
        self._id = task_meta.pk
        self._result = task_meta.get_field("result")

    def _claims(self, n: _Names) -> None:
        """Claims: one UPDATE per batch, and the claimed attempts' records."""
        task, attempt, columns, tc, ac = n.task, n.attempt, n.columns, n.tc, n.ac
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
        self.started_from_claimed = (
            f"INSERT INTO {attempt} ({ac('task')}, {ac('number')}, {ac('worker')}, "
            f"{ac('started_at')}, {ac('finished_at')}, {ac('outcome')}, "
            f"{ac('error_class')}, {ac('error_message')}, {ac('traceback')}, "
            f"{ac('decision')}, {ac('next_attempt_at')}) "
            f"SELECT {tc('id')}, {tc('attempt')}, %s, %s, NULL, %s, '', '', '', '', "
            "NULL FROM claimed"
        )

    def _inserts(self, n: _Names) -> None:
        """Task INSERTs (one row, many rows, COPY) and the ids that exist."""
        task, attempt, columns, tc, ac = n.task, n.attempt, n.columns, n.tc, n.ac
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

    def _successes(self, n: _Names) -> None:
        """Successes: the tasks' UPDATE and their attempt records'."""
        task, attempt, running = n.task, n.attempt, n.running
        result_value, tc, ac = n.result_value, n.tc, n.ac
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

    def _failures(self, n: _Names) -> None:
        """Failures: the tasks' UPDATE, for a worker's or expired leases."""
        task, columns, running, when, tc = n.task, n.columns, n.running, n.when, n.tc
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

    def _closings(self, n: _Names) -> None:
        """The closing of failed attempts' records (and of orphans)."""
        attempt, when, tc, ac = n.attempt, n.when, n.tc, n.ac
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

    def _rings(self, n: _Names) -> None:
        """The taking of due tasks' rings."""
        task, columns, tc = n.task, n.columns, n.tc
        self.take_rings = (
            f"UPDATE {task} SET {tc('status')} = %s, {tc('due_at')} = %s, "
            f"{tc('updated_at')} = %s WHERE CASE WHEN {tc('status')} IN (%s, %s) "
            f"THEN {tc('due_at')} <= %s ELSE FALSE END AND {tc('id')} IN "
        )
        self.take_rings_tail = f" RETURNING {columns}"

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


_PLAIN_FIELDS = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.BooleanField,
    models.ForeignKey,
)

_cache: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Statements] = (
    weakref.WeakKeyDictionary()
)


def statements(connection: BaseDatabaseWrapper) -> Statements:
    found = _cache.get(connection)
    if found is None:
        if connection.vendor not in SUPPORTED_VENDORS:
            raise NotImplementedError(
                f"retrying_consumers stores tasks in SQLite or PostgreSQL, "
                f"not {connection.vendor}"
            )
        found = _cache[connection] = Statements(connection)
    return found


def bound_cursor(s: Statements) -> Any:
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
