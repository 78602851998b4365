"""Tests for retrying_consumers.store: every change of task state, on the real ORM.

The store reads the wall clock itself, so times are checked against a window taken
around the call (``before <= value <= after``), never against a timing guess.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from retrying_consumers import sql as sql_module
from retrying_consumers import store
from retrying_consumers.conf import LibrarySettings
from retrying_consumers.exceptions import TaskNotFound
from retrying_consumers.models import AttemptRecord, Outcome, Status, TaskRecord
from retrying_consumers.policy import Action, Decision
from retrying_consumers.retention import purge
from retrying_consumers.store import Failure

TRACEBACK_LIMIT = LibrarySettings().traceback_limit

pytestmark = pytest.mark.django_db

RING = 30.0
LEASE = 60.0
DEFAULT_MAX = 5
WORKER = "host-a:101"
OTHER = "host-b:202"

RETRY = Decision(Action.RETRY, 20.0, "ConnectionError; retry in 20 s")
GIVE_UP = Decision(Action.GIVE_UP, None, "gave up after 1 of 5 attempts")
DISCARD = Decision(Action.DISCARD, None, "discarded: KeyError")
BOOM = Failure(
    outcome=Outcome.FAILED,
    error_class="builtins.ConnectionError",
    error_message="connection refused",
    traceback='Traceback (most recent call last):\n  File "x.py"\nConnectionError',
)


@dataclass
class Window:
    """The wall-clock interval around a store call."""

    before: datetime
    after: datetime | None = None

    def holds(self, value: datetime | None, plus: float = 0.0) -> bool:
        assert self.after is not None and value is not None
        delta = timedelta(seconds=plus)
        return self.before + delta <= value <= self.after + delta


@contextmanager
def clock() -> Iterator[Window]:
    window = Window(timezone.now())
    yield window
    window.after = timezone.now()


# Building tasks in each state through the store itself ---------------------------


def new_task(**fields: Any) -> TaskRecord:
    task, created = store.create_task(
        channel="examples",
        type="thumbnail.generate",
        payload={"image": 7},
        ring_timeout=RING,
        **fields,
    )
    assert created
    return task


def claim_next(task: TaskRecord, worker: str = WORKER) -> TaskRecord:
    won = store.claim(
        task.id,
        task.attempt + 1,
        worker=worker,
        lease_seconds=LEASE,
        default_max_attempts=DEFAULT_MAX,
    )
    assert won is not None
    return won


def running(**fields: Any) -> TaskRecord:
    return claim_next(new_task(**fields))


def failed(decision: Decision, **fields: Any) -> TaskRecord:
    task = running(**fields)
    done = store.fail(task.id, 1, worker=WORKER, failure=BOOM, decision=decision)
    assert done is not None
    return done


def retrying(**fields: Any) -> TaskRecord:
    return failed(RETRY, **fields)


def dead(**fields: Any) -> TaskRecord:
    return failed(GIVE_UP, **fields)


def succeeded(**fields: Any) -> TaskRecord:
    task = running(**fields)
    done = store.succeed(task.id, 1, worker=WORKER, result={"ok": True})
    assert done is not None
    return done


def cancelled(**fields: Any) -> TaskRecord:
    return store.cancel(new_task(**fields).id)


MAKERS: dict[str, Callable[..., TaskRecord]] = {
    "queued": new_task,
    "running": running,
    "retrying": retrying,
    "succeeded": succeeded,
    "dead": dead,
    "cancelled": cancelled,
}


def cancelled_while_running(**fields: Any) -> TaskRecord:
    return store.cancel(running(**fields).id)


#: Tasks whose attempt 1 (claimed by WORKER) is over.
ATTEMPT_OVER: dict[str, Callable[..., TaskRecord]] = {
    "succeeded": succeeded,
    "retrying": retrying,
    "dead": dead,
    "cancelled while running": cancelled_while_running,
}


def row(task_id: uuid.UUID) -> dict[str, Any]:
    """Every stored field of a task, to show that a refused call changed nothing."""
    return TaskRecord.objects.filter(pk=task_id).values().get()


def attempts(task_id: uuid.UUID) -> list[dict[str, Any]]:
    return list(AttemptRecord.objects.filter(task_id=task_id).values())


def set_fields(task_id: uuid.UUID, **fields: Any) -> None:
    TaskRecord.objects.filter(pk=task_id).update(**fields)


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def make_due(task_id: uuid.UUID) -> None:
    set_fields(task_id, due_at=ago(1))


# create_task -------------------------------------------------------------------


def test_create_task_writes_a_queued_task_due_for_a_ring_check() -> None:
    with clock() as window:
        task = new_task()
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.status == Status.QUEUED
    assert stored.attempt == 0
    assert stored.max_attempts is None
    assert stored.drive_offset == 0
    assert stored.channel == "examples"
    assert stored.type == "thumbnail.generate"
    assert stored.payload == {"image": 7}
    assert window.holds(stored.due_at, plus=RING)
    assert stored.lease_owner == ""
    assert stored.started_at is None
    assert stored.owner_id is None
    assert attempts(task.id) == []


@contextmanager
def statements() -> Iterator[list[tuple[str, Any, Any]]]:
    """The statements run meanwhile: each with its parameters and the
    database driver's cursor that ran it."""
    seen: list[tuple[str, Any, Any]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any):
        seen.append((sql, params, context["cursor"].cursor))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield seen


def test_the_task_insert_keeps_djangos_cursor_hooks() -> None:
    # On PostgreSQL the values travel apart from the statement (no quoting
    # into its text); execute wrappers still see the INSERT, and a clash
    # still raises Django's IntegrityError.
    with statements() as seen:
        task, _ = store.create_task(
            channel="c", type="job.run", payload={"quote": "it's"}, ring_timeout=RING
        )
    [(sql, _, raw)] = seen
    assert sql.startswith("INSERT INTO")
    if connection.vendor == "postgresql":
        import psycopg

        assert not isinstance(raw, psycopg.ClientCursor)
    assert TaskRecord.objects.get(pk=task.id).payload == {"quote": "it's"}
    with pytest.raises(IntegrityError), transaction.atomic():
        sql_module.insert_task(TaskRecord.objects.get(pk=task.id))


def test_create_task_keeps_max_attempts_and_owner() -> None:
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    task = new_task(max_attempts=3, owner_id=user.pk)
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.max_attempts == 3
    assert stored.owner_id == user.pk


@pytest.mark.parametrize("state", ["queued", "running", "retrying", "succeeded"])
def test_an_idempotency_key_returns_the_live_or_succeeded_task(state: str) -> None:
    first = MAKERS[state](idempotency_key="order-42")
    again, created = store.create_task(
        channel="examples",
        type="other.type",
        payload={"different": True},
        ring_timeout=RING,
        idempotency_key="order-42",
    )
    assert created is False
    assert again.id == first.id
    assert again.status == state
    assert TaskRecord.objects.count() == 1


@pytest.mark.parametrize("state", ["dead", "cancelled"])
def test_an_idempotency_key_makes_a_new_task_after_dead_or_cancelled(
    state: str,
) -> None:
    first = MAKERS[state](idempotency_key="order-42")
    second, created = store.create_task(
        channel="examples",
        type="thumbnail.generate",
        payload={},
        ring_timeout=RING,
        idempotency_key="order-42",
    )
    assert created is True
    assert second.id != first.id
    assert second.status == Status.QUEUED
    third, created_again = store.create_task(
        channel="examples",
        type="thumbnail.generate",
        payload={},
        ring_timeout=RING,
        idempotency_key="order-42",
    )
    assert (third.id, created_again) == (second.id, False)
    assert TaskRecord.objects.count() == 2


def test_different_or_missing_idempotency_keys_make_separate_tasks() -> None:
    ids = {
        new_task(idempotency_key="a").id,
        new_task(idempotency_key="b").id,
        new_task().id,
        new_task().id,
    }
    assert len(ids) == 4


def succeeded_history(count: int, keyed: bool = False) -> None:
    """``count`` tasks that succeeded (with keys ``order-N``), then the task
    table's statistics gathered."""
    now = timezone.now()
    TaskRecord.objects.bulk_create(
        TaskRecord(
            channel="c",
            type="job.run",
            status=Status.SUCCEEDED,
            attempt=1,
            idempotency_key=f"order-{n}" if keyed else None,
            finished_at=now,
        )
        for n in range(count)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskRecord._meta.db_table}")


def plan_of(sql: str, params: Any = None) -> str:
    """How the store would run ``sql``: SQLite's ``EXPLAIN QUERY PLAN`` details
    or PostgreSQL's ``EXPLAIN`` lines, one per line."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return "\n".join(row[-1] for row in cursor.fetchall())
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_idempotency_key_lookup_reads_the_key_index() -> None:
    # Excluding dead and cancelled instead of naming the statuses the unique
    # index covers read every row of the table, at every keyed enqueue.
    succeeded_history(500, keyed=True)
    with CaptureQueriesContext(connection) as lookups:
        again, created = store.create_task(
            channel="c",
            type="job.run",
            payload={},
            ring_timeout=RING,
            idempotency_key="order-7",
        )
    assert created is False and again.idempotency_key == "order-7"
    assert len(lookups) == 1
    plan = plan_of(lookups[0]["sql"])
    assert "rc_task_idempotency_key" in plan, plan


def test_the_periodic_scans_read_an_index() -> None:
    # Every worker looks for due tasks and expired leases each second, and
    # for tasks to purge: with a scan of the table instead of an index of the
    # few rows in those statuses, each look would cost more as finished tasks
    # pile up.
    succeeded_history(500)
    new_task()
    claim_next(new_task())
    with CaptureQueriesContext(connection) as due:
        assert store.due_task_ids() == []
    with CaptureQueriesContext(connection) as leases:
        assert store.expired_lease_ids() == []
    with CaptureQueriesContext(connection) as purges:
        assert purge(Status.DEAD, timedelta(days=1)) == 0  # one look, no rows
    for queries in (due, leases, purges):
        [sql] = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
        plan = plan_of(sql)
        if connection.vendor == "sqlite":
            assert "USING INDEX rc_task_" in plan, (sql, plan)
        else:
            assert "Index Scan using rc_task_" in plan, (sql, plan)
            assert "Seq Scan" not in plan, (sql, plan)


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_with_one_idempotency_key_make_one_task() -> None:
    def create() -> tuple[uuid.UUID, bool]:
        task, created = store.create_task(
            channel="examples",
            type="thumbnail.generate",
            payload={},
            ring_timeout=RING,
            idempotency_key="once",
        )
        return task.id, created

    results = in_threads(create, 8)
    assert len({task_id for task_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert TaskRecord.objects.count() == 1


# claim -------------------------------------------------------------------------


def test_claim_starts_the_attempt_and_records_it() -> None:
    task = new_task()
    with clock() as window:
        won = store.claim(
            task.id, 1, worker=WORKER, lease_seconds=LEASE, default_max_attempts=4
        )
    assert won is not None
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.status == Status.RUNNING
    assert stored.attempt == 1
    assert stored.max_attempts == 4
    assert stored.lease_owner == WORKER
    assert window.holds(stored.lease_expires_at, plus=LEASE)
    assert window.holds(stored.started_at)
    assert stored.drive_started_at == stored.started_at
    assert stored.due_at is None
    assert won.pk == stored.pk and won.status == Status.RUNNING
    [record] = AttemptRecord.objects.filter(task_id=task.id)
    assert record.number == 1
    assert record.worker == WORKER
    assert record.outcome == Outcome.RUNNING
    assert record.started_at == stored.started_at
    assert record.finished_at is None


def test_claim_keeps_an_explicit_max_attempts() -> None:
    task = claim_next(new_task(max_attempts=2))
    assert task.max_attempts == 2
    assert TaskRecord.objects.get(pk=task.id).max_attempts == 2


def test_a_second_claim_of_the_same_attempt_loses() -> None:
    task = running()
    before = row(task.id)
    lost = store.claim(
        task.id, 1, worker=OTHER, lease_seconds=LEASE, default_max_attempts=DEFAULT_MAX
    )
    assert lost is None
    assert row(task.id) == before
    assert AttemptRecord.objects.filter(task_id=task.id).count() == 1


def due_retry() -> TaskRecord:
    task = retrying()
    make_due(task.id)
    return task


@pytest.mark.parametrize(
    ("make", "attempt"),
    [(new_task, 0), (new_task, 2), (new_task, 3), (due_retry, 1), (due_retry, 3)],
)
def test_a_claim_for_another_attempt_number_loses(
    make: Callable[[], TaskRecord], attempt: int
) -> None:
    task = make()
    before, history = row(task.id), attempts(task.id)
    lost = store.claim(
        task.id,
        attempt,
        worker=WORKER,
        lease_seconds=LEASE,
        default_max_attempts=DEFAULT_MAX,
    )
    assert lost is None
    assert row(task.id) == before
    assert attempts(task.id) == history


def test_a_retrying_task_is_claimed_once_due_and_not_before() -> None:
    task = retrying()
    before = row(task.id)
    assert before["due_at"] > timezone.now()
    early = store.claim(
        task.id, 2, worker=WORKER, lease_seconds=LEASE, default_max_attempts=DEFAULT_MAX
    )
    assert early is None
    assert row(task.id) == before
    make_due(task.id)  # due, and nobody has taken the ring: the claim takes it
    claimed = store.claim(
        task.id, 2, worker=WORKER, lease_seconds=LEASE, default_max_attempts=DEFAULT_MAX
    )
    assert claimed is not None
    assert claimed.status == Status.RUNNING
    assert (claimed.attempt, claimed.due_at) == (2, None)
    assert [a["number"] for a in attempts(task.id)] == [1, 2]
    again = store.claim(
        task.id, 2, worker=OTHER, lease_seconds=LEASE, default_max_attempts=DEFAULT_MAX
    )
    assert again is None
    assert TaskRecord.objects.get(pk=task.id).lease_owner == WORKER


@pytest.mark.parametrize("state", ["succeeded", "dead", "cancelled"])
def test_a_finished_task_cannot_be_claimed(state: str) -> None:
    task = MAKERS[state]()
    for attempt in (task.attempt, task.attempt + 1):
        lost = store.claim(
            task.id,
            attempt,
            worker=OTHER,
            lease_seconds=LEASE,
            default_max_attempts=DEFAULT_MAX,
        )
        assert lost is None
    assert TaskRecord.objects.get(pk=task.id).status == state


@pytest.mark.parametrize("task_id", [uuid.uuid4(), str(uuid.uuid4()), "not-a-uuid"])
def test_claiming_an_unknown_task_raises_task_not_found(task_id: Any) -> None:
    with pytest.raises(TaskNotFound):
        store.claim(
            task_id,
            1,
            worker=WORKER,
            lease_seconds=LEASE,
            default_max_attempts=DEFAULT_MAX,
        )
    assert AttemptRecord.objects.count() == 0


def test_a_claim_that_cannot_record_its_attempt_takes_nothing() -> None:
    task = new_task()
    # A stray record of attempt 1 makes the claim's own record fail its
    # unique constraint, after the task's UPDATE has already matched.
    AttemptRecord.objects.create(
        task_id=task.id, number=1, worker="stray", started_at=timezone.now()
    )
    before = row(task.id)
    with pytest.raises(DatabaseError):
        store.claim(
            task.id,
            1,
            worker=WORKER,
            lease_seconds=LEASE,
            default_max_attempts=DEFAULT_MAX,
        )
    assert row(task.id) == before
    assert list(AttemptRecord.objects.values_list("worker", flat=True)) == ["stray"]


def test_claim_accepts_the_id_as_a_string() -> None:
    task = new_task()
    won = store.claim(
        str(task.id),
        1,
        worker=WORKER,
        lease_seconds=LEASE,
        default_max_attempts=DEFAULT_MAX,
    )
    assert won is not None and won.id == task.id


def test_a_later_attempt_keeps_the_first_start_times() -> None:
    first = retrying()
    assert store.take_ring(first.id, ring_timeout=RING) is None  # not due yet
    make_due(first.id)
    assert store.take_ring(first.id, ring_timeout=RING) is not None
    second = claim_next(first, worker=OTHER)
    assert second.attempt == 2
    assert second.started_at == first.started_at
    assert second.drive_started_at == first.drive_started_at
    assert second.max_attempts == DEFAULT_MAX
    assert second.lease_owner == OTHER
    numbers = AttemptRecord.objects.filter(task_id=first.id).values_list(
        "number", "worker"
    )
    assert list(numbers) == [(1, WORKER), (2, OTHER)]


def test_a_re_driven_task_gets_a_fresh_budget_counted_on_from_its_attempts() -> None:
    task = dead(max_attempts=1)
    set_fields(task.id, started_at=ago(3600), drive_started_at=ago(3600))
    store.retry_now(task.id, ring_timeout=RING)
    with clock() as window:
        again = claim_next(task)
    assert again.attempt == 2
    assert again.drive_offset == 1
    # The budget fixed at enqueue (1) is granted again, not the policy's.
    assert again.max_attempts == 1 + 1
    assert window.holds(again.drive_started_at)
    assert again.started_at is not None and again.started_at < window.before


# The claim race -----------------------------------------------------------------


def in_threads(work: Callable[[], Any], count: int) -> list[Any]:
    """Run ``work`` in ``count`` threads released at once; return their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            result = work()
            with lock:
                results.append(result)
        except BaseException as err:
            with lock:
                errors.append(err)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(results) == count
    return results


def race_for(task_id: uuid.UUID, attempt: int, claimers: int) -> str:
    """Let ``claimers`` threads claim one attempt at once; return the winner."""

    def claim() -> tuple[str, TaskRecord | None]:
        worker = f"host:{threading.get_ident()}"
        return worker, store.claim(
            task_id,
            attempt,
            worker=worker,
            lease_seconds=LEASE,
            default_max_attempts=DEFAULT_MAX,
        )

    results = in_threads(claim, claimers)
    assert len({worker for worker, _ in results}) == claimers
    winners = [(worker, won) for worker, won in results if won is not None]
    assert len(winners) == 1, winners
    [(worker, won)] = winners
    assert won.attempt == attempt and won.lease_owner == worker
    return worker


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("claimers", [2, 8])
def test_concurrent_claims_of_one_attempt_have_exactly_one_winner(
    claimers: int,
) -> None:
    # Several rounds, so that a claim that is not atomic has many chances to lose.
    tasks = [new_task() for _ in range(5)]
    winners = [race_for(task.id, 1, claimers) for task in tasks]
    for task, worker in zip(tasks, winners, strict=True):
        stored = TaskRecord.objects.get(pk=task.id)
        assert (stored.status, stored.attempt, stored.lease_owner) == (
            Status.RUNNING,
            1,
            worker,
        )
        records = AttemptRecord.objects.filter(task_id=task.id)
        assert [(r.number, r.worker) for r in records] == [(1, worker)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_a_rung_retry_have_exactly_one_winner() -> None:
    task = new_task()
    first = race_for(task.id, 1, 8)
    failed = store.fail(task.id, 1, worker=first, failure=BOOM, decision=RETRY)
    assert failed is not None
    make_due(task.id)
    assert store.take_ring(task.id, ring_timeout=RING) is not None
    second = race_for(task.id, 2, 8)
    records = AttemptRecord.objects.filter(task_id=task.id)
    assert [(r.number, r.worker) for r in records] == [(1, first), (2, second)]
    assert TaskRecord.objects.get(pk=task.id).lease_owner == second


# extend_lease --------------------------------------------------------------------


def test_the_lease_owner_extends_its_lease() -> None:
    task = running()
    with clock() as window:
        assert store.extend_lease(task.id, 1, worker=WORKER, lease_seconds=600)
    assert window.holds(row(task.id)["lease_expires_at"], plus=600)


@pytest.mark.parametrize(("attempt", "worker"), [(1, OTHER), (2, WORKER), (0, WORKER)])
def test_only_the_owner_of_the_attempt_extends_the_lease(
    attempt: int, worker: str
) -> None:
    task = running()
    before = row(task.id)
    assert not store.extend_lease(task.id, attempt, worker=worker, lease_seconds=600)
    assert row(task.id) == before


@pytest.mark.parametrize("state", ATTEMPT_OVER)
def test_a_lease_is_not_extended_once_the_attempt_is_over(state: str) -> None:
    task = ATTEMPT_OVER[state]()
    before = row(task.id)
    assert not store.extend_lease(task.id, 1, worker=WORKER, lease_seconds=600)
    assert row(task.id) == before


# succeed -------------------------------------------------------------------------


def test_succeed_records_the_result_and_the_attempt() -> None:
    task = running()
    with clock() as window:
        done = store.succeed(task.id, 1, worker=WORKER, result={"url": "/t/7.png"})
    assert done is not None
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.status == Status.SUCCEEDED
    assert stored.result == {"url": "/t/7.png"}
    assert window.holds(stored.finished_at)
    assert stored.lease_owner == ""
    assert stored.lease_expires_at is None
    assert stored.due_at is None
    [record] = AttemptRecord.objects.filter(task_id=task.id)
    assert record.outcome == Outcome.SUCCEEDED
    assert record.finished_at == stored.finished_at
    assert record.error_class == ""


@pytest.mark.parametrize(("attempt", "worker"), [(1, OTHER), (2, WORKER)])
def test_succeed_by_someone_else_changes_nothing(attempt: int, worker: str) -> None:
    task = running()
    before, records = row(task.id), attempts(task.id)
    assert store.succeed(task.id, attempt, worker=worker, result=1) is None
    assert row(task.id) == before
    assert attempts(task.id) == records


def test_succeed_after_cancel_changes_nothing() -> None:
    task = store.cancel(running().id, reason="stop it")
    before, records = row(task.id), attempts(task.id)
    assert store.succeed(task.id, 1, worker=WORKER, result={"late": True}) is None
    assert row(task.id) == before
    assert before["status"] == Status.CANCELLED and before["result"] is None
    # The cancel closed the running attempt; the late outcome leaves it so.
    assert attempts(task.id) == records
    [closed] = records
    assert closed["outcome"] == "cancelled" and closed["finished_at"] is not None
    assert closed["error_message"] == "stop it"


def test_cancel_of_a_waiting_task_leaves_its_finished_attempts_alone() -> None:
    task = running()
    assert (
        store.fail(task.id, 1, worker=WORKER, failure=BOOM, decision=RETRY) is not None
    )
    before = attempts(task.id)
    store.cancel(task.id, reason="not now")
    assert attempts(task.id) == before


def test_succeed_twice_records_once() -> None:
    task = running()
    first = store.succeed(task.id, 1, worker=WORKER, result="first")
    assert first is not None
    before = row(task.id)
    assert store.succeed(task.id, 1, worker=WORKER, result="second") is None
    assert row(task.id) == before
    assert before["result"] == "first"


# fail ----------------------------------------------------------------------------


def test_fail_with_retry_schedules_the_next_attempt() -> None:
    task = running()
    with clock() as window:
        done = store.fail(task.id, 1, worker=WORKER, failure=BOOM, decision=RETRY)
    assert done is not None
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.status == Status.RETRYING
    assert window.holds(stored.due_at, plus=20.0)
    assert stored.finished_at is None
    assert stored.error_class == "builtins.ConnectionError"
    assert stored.error_message == "connection refused"
    assert stored.reason == RETRY.reason
    assert stored.lease_owner == ""
    assert stored.lease_expires_at is None
    assert stored.attempt == 1
    [record] = AttemptRecord.objects.filter(task_id=task.id)
    assert record.outcome == Outcome.FAILED
    assert record.error_class == "builtins.ConnectionError"
    assert record.error_message == "connection refused"
    assert record.traceback == BOOM.traceback
    assert record.decision == "retry"
    assert record.next_attempt_at == stored.due_at
    assert window.holds(record.finished_at)


@pytest.mark.parametrize(
    ("decision", "status"),
    [(GIVE_UP, Status.DEAD), (DISCARD, Status.CANCELLED)],
    ids=["give_up", "discard"],
)
def test_fail_without_retry_ends_the_task(decision: Decision, status: str) -> None:
    task = running()
    with clock() as window:
        done = store.fail(task.id, 1, worker=WORKER, failure=BOOM, decision=decision)
    assert done is not None and done.status == status
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.status == status
    assert window.holds(stored.finished_at)
    assert stored.due_at is None
    assert stored.reason == decision.reason
    assert stored.error_class == BOOM.error_class
    [record] = AttemptRecord.objects.filter(task_id=task.id)
    assert record.decision == decision.action.value
    assert record.next_attempt_at is None
    assert record.finished_at == stored.finished_at


def test_fail_by_another_worker_changes_nothing() -> None:
    task = running()
    before, records = row(task.id), attempts(task.id)
    assert store.fail(task.id, 1, worker=OTHER, failure=BOOM, decision=GIVE_UP) is None
    assert store.fail(task.id, 2, worker=WORKER, failure=BOOM, decision=RETRY) is None
    assert row(task.id) == before
    assert attempts(task.id) == records


def test_a_lost_worker_is_failed_whoever_held_the_lease() -> None:
    task = running()
    lost = Failure(Outcome.WORKER_LOST, "WorkerLost", "worker lost")
    # While the lease runs, the worker is not lost.
    assert store.fail(task.id, 1, worker=None, failure=lost, decision=RETRY) is None
    set_fields(task.id, lease_expires_at=ago(1))
    done = store.fail(task.id, 1, worker=None, failure=lost, decision=RETRY)
    assert done is not None
    assert done.status == Status.RETRYING
    assert done.lease_owner == ""
    [record] = AttemptRecord.objects.filter(task_id=task.id)
    assert record.outcome == Outcome.WORKER_LOST
    assert record.worker == WORKER


@pytest.mark.parametrize("state", ATTEMPT_OVER)
def test_a_lost_worker_is_not_recorded_once_the_attempt_is_over(state: str) -> None:
    task = ATTEMPT_OVER[state]()
    before, records = row(task.id), attempts(task.id)
    lost = Failure(Outcome.WORKER_LOST, "WorkerLost", "worker lost")
    assert store.fail(task.id, 1, worker=None, failure=lost, decision=RETRY) is None
    assert row(task.id) == before
    assert attempts(task.id) == records


def test_a_lost_worker_of_another_attempt_is_not_recorded() -> None:
    task = running()
    before = row(task.id)
    lost = Failure(Outcome.WORKER_LOST, "WorkerLost", "worker lost")
    assert store.fail(task.id, 2, worker=None, failure=lost, decision=RETRY) is None
    assert row(task.id) == before


def test_interrupt_hands_the_task_back_without_using_an_attempt() -> None:
    task = running(max_attempts=2)
    assert store.interrupt(task.id, 1, worker=OTHER) is None
    with clock() as window:
        back = store.interrupt(task.id, 1, worker=WORKER)
    assert back.status == Status.QUEUED
    assert window.holds(back.due_at)
    assert (back.attempt, back.max_attempts) == (1, 3)
    assert back.lease_owner == ""
    [record] = attempts(task.id)
    assert record["outcome"] == Outcome.INTERRUPTED
    assert claim_next(back).attempt == 2


def test_the_stored_traceback_is_capped_keeping_its_end() -> None:
    task = running()
    head = "Traceback (most recent call last):\n"
    tail = "\nConnectionError: the line that matters"
    text = head + "  frame\n" * (TRACEBACK_LIMIT // 4) + tail
    long = Failure(Outcome.FAILED, "ConnectionError", "boom", traceback=text)
    store.fail(task.id, 1, worker=WORKER, failure=long, decision=RETRY)
    stored = AttemptRecord.objects.get(task_id=task.id).traceback
    assert len(stored) == TRACEBACK_LIMIT
    assert stored.endswith(tail)
    assert stored == text[-TRACEBACK_LIMIT:]
    assert not stored.startswith(head)


def test_the_traceback_cap_follows_the_traceback_limit_setting() -> None:
    task = running()
    text = "x" * 500 + "END"
    long = Failure(Outcome.FAILED, "ValueError", "boom", traceback=text)
    with override_settings(RETRYING_CONSUMERS={"TRACEBACK_LIMIT": 100}):
        store.fail(task.id, 1, worker=WORKER, failure=long, decision=RETRY)
    assert AttemptRecord.objects.get(task_id=task.id).traceback == text[-100:]


# attempt_state -------------------------------------------------------------------


def test_attempt_state_counts_the_attempts_of_the_current_drive() -> None:
    now = timezone.now()
    task = TaskRecord(
        attempt=7,
        drive_offset=4,
        started_at=now - timedelta(hours=5),
        drive_started_at=now - timedelta(minutes=3),
    )
    state = store.attempt_state(task, now)
    assert state.attempt == 3
    assert state.first_started_at == now - timedelta(minutes=3)
    assert state.now == now


def test_attempt_state_falls_back_to_started_at_then_now() -> None:
    now = timezone.now()
    started = now - timedelta(seconds=90)
    old = store.attempt_state(TaskRecord(attempt=2, started_at=started), now)
    assert (old.attempt, old.first_started_at) == (2, started)
    fresh = store.attempt_state(TaskRecord(attempt=0), now)
    assert (fresh.attempt, fresh.first_started_at) == (1, now)


def test_attempt_state_of_a_re_driven_task_from_the_store() -> None:
    task = dead()
    set_fields(task.id, started_at=ago(3600), drive_started_at=ago(3600))
    store.retry_now(task.id, ring_timeout=RING)
    again = claim_next(task)
    state = store.attempt_state(again)
    assert state.attempt == 1
    assert state.first_started_at == again.drive_started_at
    assert state.first_started_at > again.started_at + timedelta(minutes=59)


# take_ring -----------------------------------------------------------------------


def test_a_due_retry_is_rung_once() -> None:
    task = retrying()
    assert store.take_ring(task.id, ring_timeout=RING) is None
    assert row(task.id)["status"] == Status.RETRYING
    make_due(task.id)
    with clock() as window:
        taken = store.take_ring(task.id, ring_timeout=RING)
    assert taken is not None
    assert taken.status == Status.QUEUED
    assert window.holds(taken.due_at, plus=RING)
    assert row(task.id)["due_at"] == taken.due_at
    assert store.take_ring(task.id, ring_timeout=RING) is None
    assert claim_next(taken).attempt == 2


def test_a_queued_task_whose_ring_was_lost_is_rung_again() -> None:
    task = new_task()
    assert store.take_ring(task.id, ring_timeout=RING) is None
    make_due(task.id)
    with clock() as window:
        taken = store.take_ring(task.id, ring_timeout=RING)
    assert taken is not None and taken.status == Status.QUEUED
    assert window.holds(taken.due_at, plus=RING)
    assert store.take_ring(task.id, ring_timeout=RING) is None


@pytest.mark.parametrize("state", ["running", "succeeded", "dead", "cancelled"])
def test_running_and_finished_tasks_are_never_rung(state: str) -> None:
    task = MAKERS[state]()
    make_due(task.id)
    before = row(task.id)
    assert store.take_ring(task.id, ring_timeout=RING) is None
    assert row(task.id) == before


def test_take_ring_of_an_unknown_task_takes_nothing() -> None:
    assert store.take_ring(uuid.uuid4(), ring_timeout=RING) is None


# save_progress -------------------------------------------------------------------


def test_progress_is_saved_while_running() -> None:
    task = running()
    with clock() as window:
        assert store.save_progress(task.id, 3, 10, "resizing " + "x" * 600)
    stored = TaskRecord.objects.get(pk=task.id)
    assert (stored.progress_current, stored.progress_total) == (3, 10)
    assert stored.progress_message == ("resizing " + "x" * 600)[:500]
    assert window.holds(stored.progress_at)


@pytest.mark.parametrize(
    "state", ["queued", "retrying", "succeeded", "dead", "cancelled"]
)
def test_progress_is_not_saved_unless_running(state: str) -> None:
    task = MAKERS[state]()
    before = row(task.id)
    assert not store.save_progress(task.id, 1, 2, "late")
    assert row(task.id) == before


# retry_now -----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["retrying", "queued"])
def test_retry_now_rings_a_waiting_task_at_once(state: str) -> None:
    task = MAKERS[state]()
    with clock() as window:
        again = store.retry_now(task.id, ring_timeout=RING)
    assert again.status == Status.QUEUED
    assert again.attempt == task.attempt
    assert again.drive_offset == 0
    # The ring was taken: the next ring check is one ring timeout away.
    assert window.holds(again.due_at, plus=RING)
    assert store.take_ring(task.id, ring_timeout=RING) is None
    assert claim_next(again).attempt == task.attempt + 1


@pytest.mark.parametrize("state", ["dead", "cancelled"])
def test_retry_now_starts_a_new_drive_of_a_finished_task(state: str) -> None:
    task = MAKERS[state](max_attempts=1)
    with clock() as window:
        again = store.retry_now(task.id, ring_timeout=RING)
    assert again.status == Status.QUEUED
    assert again.attempt == task.attempt
    assert again.drive_offset == task.attempt
    assert again.max_attempts == task.attempt + 1  # enqueue's budget, again
    assert again.drive_started_at is None
    assert again.finished_at is None
    assert again.reason == ""
    assert window.holds(again.due_at, plus=RING)
    if task.attempt:
        stale = store.claim(
            task.id,
            task.attempt,
            worker=OTHER,
            lease_seconds=LEASE,
            default_max_attempts=DEFAULT_MAX,
        )
        assert stale is None
    claimed = claim_next(again)
    assert claimed.attempt == task.attempt + 1
    assert claimed.max_attempts == task.attempt + 1


def test_re_drive_without_a_fixed_budget_takes_the_policys() -> None:
    task = dead()
    again = store.retry_now(task.id, ring_timeout=RING)
    assert again.max_attempts is None
    assert claim_next(again).max_attempts == task.attempt + DEFAULT_MAX


@pytest.mark.parametrize("state", ["running", "succeeded"])
def test_retry_now_refuses_running_and_succeeded_tasks(state: str) -> None:
    task = MAKERS[state]()
    before = row(task.id)
    with pytest.raises(ValueError, match=state):
        store.retry_now(task.id, ring_timeout=RING)
    assert row(task.id) == before


@pytest.mark.parametrize("task_id", [uuid.uuid4(), "nope"])
def test_retry_now_of_an_unknown_task_raises_task_not_found(task_id: Any) -> None:
    with pytest.raises(TaskNotFound):
        store.retry_now(task_id, ring_timeout=RING)


@pytest.mark.parametrize("state", ["dead", "cancelled"])
def test_retry_now_refuses_clearly_when_the_key_was_reused(state: str) -> None:
    old = MAKERS[state](idempotency_key="order-42")
    new = new_task(idempotency_key="order-42")
    with pytest.raises(ValueError, match="order-42"):
        store.retry_now(old.id, ring_timeout=RING)
    assert row(old.id)["status"] == state
    assert row(new.id)["status"] == Status.QUEUED


# cancel --------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "running", "retrying"])
def test_cancel_ends_an_active_task(state: str) -> None:
    task = MAKERS[state]()
    with clock() as window:
        done = store.cancel(task.id, reason="no longer wanted")
    assert done.status == Status.CANCELLED
    stored = TaskRecord.objects.get(pk=task.id)
    assert stored.status == Status.CANCELLED
    assert stored.reason == "no longer wanted"
    assert window.holds(stored.finished_at)
    assert stored.due_at is None
    assert stored.lease_owner == ""
    assert stored.lease_expires_at is None
    assert store.take_ring(task.id, ring_timeout=RING) is None


def test_cancel_caps_the_reason() -> None:
    task = store.cancel(new_task().id, reason="r" * 800)
    assert TaskRecord.objects.get(pk=task.id).reason == "r" * 500


@pytest.mark.parametrize("state", ["succeeded", "dead", "cancelled"])
def test_cancel_leaves_a_finished_task_unchanged(state: str) -> None:
    task = MAKERS[state]()
    before = row(task.id)
    returned = store.cancel(task.id, reason="too late")
    assert returned.status == state
    assert row(task.id) == before


@pytest.mark.parametrize("task_id", [uuid.uuid4(), "nope"])
def test_cancel_of_an_unknown_task_raises_task_not_found(task_id: Any) -> None:
    with pytest.raises(TaskNotFound):
        store.cancel(task_id)


# Scans ---------------------------------------------------------------------------


def test_due_task_ids_are_the_waiting_tasks_past_due_oldest_first() -> None:
    retry_due = retrying()
    set_fields(retry_due.id, due_at=ago(5))
    queued_due = new_task()
    set_fields(queued_due.id, due_at=ago(10))
    retrying()  # not due yet
    new_task()  # not due yet
    for state in ("running", "succeeded", "dead", "cancelled"):
        make_due(MAKERS[state]().id)
    assert store.due_task_ids() == [queued_due.id, retry_due.id]
    assert store.due_task_ids(limit=1) == [queued_due.id]


def test_expired_lease_ids_are_running_tasks_past_their_lease() -> None:
    older = running()
    set_fields(older.id, lease_expires_at=ago(20))
    newer = claim_next(retry_again(), worker=OTHER)
    set_fields(newer.id, lease_expires_at=ago(10))
    running()  # lease still valid
    for state in ("queued", "retrying", "succeeded", "dead", "cancelled"):
        set_fields(MAKERS[state]().id, lease_expires_at=ago(30))
    assert store.expired_lease_ids() == [(older.id, 1), (newer.id, 2)]
    assert store.expired_lease_ids(limit=1) == [(older.id, 1)]


def retry_again() -> TaskRecord:
    """A task on its second attempt's doorstep: failed once and rung again."""
    task = retrying()
    make_due(task.id)
    taken = store.take_ring(task.id, ring_timeout=RING)
    assert taken is not None
    return taken


# Batches: several attempts in one statement ------------------------------------


def test_claim_many_decides_each_request_on_its_own() -> None:
    fresh, later, other = new_task(), new_task(), new_task(max_attempts=2)
    missing = uuid.uuid4()
    requests = [
        store.ClaimRequest(fresh.id, 1, DEFAULT_MAX),
        store.ClaimRequest(fresh.id, 1, DEFAULT_MAX),  # a duplicate ring
        store.ClaimRequest(later.id, 2, DEFAULT_MAX),  # not due: it is at 0
        store.ClaimRequest(missing, 1, DEFAULT_MAX),
        store.ClaimRequest(other.id, 1, DEFAULT_MAX),
    ]
    won, duplicate, early, unknown, capped = store.claim_many(
        requests, worker=WORKER, lease_seconds=LEASE
    )
    assert (won.id, won.attempt, won.max_attempts) == (fresh.id, 1, DEFAULT_MAX)
    assert won.status == Status.RUNNING and won.lease_owner == WORKER
    assert won.payload == {"image": 7} and won.started_at is not None
    assert duplicate is None and early is None
    assert isinstance(unknown, TaskNotFound) and str(missing) in str(unknown)
    assert capped.max_attempts == 2  # the task's own cap, not the default
    assert row(later.id)["status"] == Status.QUEUED
    assert sorted(
        AttemptRecord.objects.values_list("task_id", "number", "worker")
    ) == sorted([(fresh.id, 1, WORKER), (other.id, 1, WORKER)])
    # What claim_many returned is what the ORM reads.
    assert row(fresh.id) == {
        f.attname: getattr(won, f.attname) for f in TaskRecord._meta.concrete_fields
    }


def test_succeed_many_records_ours_and_closes_late_attempts() -> None:
    mine, lost = new_task(), new_task()
    for task in (mine, lost):
        store.claim(
            task.id, 1, worker=WORKER, lease_seconds=LEASE, default_max_attempts=3
        )
    store.cancel(lost.id)  # its outcome can no longer count
    done = store.succeed_many(
        [
            (store.Success(mine.id, 1, {"url": "/7.png"}), None),
            (store.Success(lost.id, 1, "late"), None),
        ],
        worker=WORKER,
    )
    assert done[0] is not None and done[0].result == {"url": "/7.png"}
    assert done[0].status == Status.SUCCEEDED
    assert done[1] is None
    assert row(lost.id)["status"] == Status.CANCELLED
    assert row(lost.id)["result"] is None
    outcomes = dict(AttemptRecord.objects.values_list("task_id", "outcome"))
    # The cancel closed the late attempt; its late outcome changed nothing.
    assert outcomes == {mine.id: "succeeded", lost.id: "cancelled"}
    assert AttemptRecord.objects.filter(finished_at=None).count() == 0


def test_a_batch_of_successes_without_results_stores_null() -> None:
    task = new_task()
    store.claim(task.id, 1, worker=WORKER, lease_seconds=LEASE, default_max_attempts=3)
    [done] = store.succeed_many(
        [(store.Success(task.id, 1, None), None)], worker=WORKER
    )
    assert done is not None and row(task.id)["result"] is None


def test_fail_many_records_ours_and_closes_late_attempts_without_a_decision() -> None:
    mine, late, lost = new_task(), new_task(), new_task()
    for task in (mine, late, lost):
        claim_next(task)
    store.cancel(late.id)  # its outcome can no longer count
    set_fields(lost.id, lease_expires_at=ago(1))
    gone = Failure(Outcome.WORKER_LOST, "WorkerLost", "worker lost")
    assert store.fail(lost.id, 1, worker=None, failure=gone, decision=RETRY)
    items = [
        store.FailedAttempt(task.id, 1, BOOM, RETRY) for task in (mine, late, lost)
    ]
    done = store.fail_many(items, worker=WORKER)
    assert done[0] is not None and done[0].status == Status.RETRYING
    assert done[1] is None and done[2] is None
    assert row(late.id)["status"] == Status.CANCELLED
    records = {
        r["task_id"]: r
        for r in AttemptRecord.objects.values(
            "task_id", "outcome", "decision", "next_attempt_at", "error_class"
        )
    }
    assert records[mine.id]["decision"] == "retry"
    assert records[mine.id]["next_attempt_at"] == row(mine.id)["due_at"]
    # The cancel closed the late attempt; its late failure changed nothing.
    assert records[late.id] == {
        "task_id": late.id,
        "outcome": Outcome.CANCELLED,
        "decision": "",
        "next_attempt_at": None,
        "error_class": "",
    }
    # The lost worker's record was closed already; a late failure keeps it.
    assert records[lost.id]["outcome"] == Outcome.WORKER_LOST
    assert AttemptRecord.objects.filter(finished_at=None).count() == 0


# The batch statements outside any transaction, as workers run them --------------

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="on SQLite a batch is several statements in a transaction",
)


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_cannot_record_its_attempt_takes_nothing_in_autocommit() -> None:
    test_a_claim_that_cannot_record_its_attempt_takes_nothing()


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_on_postgresql_each_batch_is_one_statement() -> None:
    first, second = new_task(), new_task()
    with CaptureQueriesContext(connection) as claims:
        won = store.claim_many(
            [store.ClaimRequest(t.id, 1, DEFAULT_MAX) for t in (first, second)],
            worker=WORKER,
            lease_seconds=LEASE,
        )
    assert all(isinstance(task, TaskRecord) for task in won)
    assert AttemptRecord.objects.count() == 2
    with CaptureQueriesContext(connection) as successes:
        store.succeed_many(
            [(store.Success(first.id, 1, "ok"), won[0])],
            worker=WORKER,
        )
    with CaptureQueriesContext(connection) as failures:
        store.fail_many(
            [store.FailedAttempt(second.id, 1, BOOM, GIVE_UP)], worker=WORKER
        )
    assert [len(c) for c in (claims, successes, failures)] == [1, 1, 1]
    assert dict(AttemptRecord.objects.values_list("task_id", "outcome")) == {
        first.id: Outcome.SUCCEEDED,
        second.id: Outcome.FAILED,
    }
    assert row(second.id)["status"] == Status.DEAD


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_batch_statements_find_their_rows_by_key_whatever_the_statistics() -> None:
    # Statistics gathered while every task had succeeded, then a burst of new
    # tasks: the planner takes queued and running rows for rare, and indexes
    # by status for the way to them, unless the statements leave it the key.
    succeeded_history(2000)
    tasks = [new_task() for _ in range(300)]
    for task in tasks[4:150]:
        claim_next(task)
    batch = tasks[:4]
    with statements() as claims:
        store.claim_many(
            [store.ClaimRequest(t.id, 1, DEFAULT_MAX) for t in batch],
            worker=WORKER,
            lease_seconds=LEASE,
        )
    with statements() as successes:
        store.succeed_many(
            [(store.Success(t.id, 1, None), None) for t in batch[:2]], worker=WORKER
        )
    with statements() as failures:
        store.fail_many(
            [store.FailedAttempt(t.id, 1, BOOM, RETRY) for t in batch[2:]],
            worker=WORKER,
        )
    with statements() as rings:
        store.take_rings([t.id for t in tasks[150:154]], ring_timeout=RING)
    for captured in (claims, successes, failures, rings):
        statement, params, _ = captured[0]
        assert statement.startswith(("WITH ", "UPDATE "))
        plan = plan_of(statement, params)
        assert "retrying_consumers_taskrecord_pkey" in plan, plan
        assert "rc_task_" not in plan, plan
