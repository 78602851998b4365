"""Cancelling a running attempt stops it in its worker: real runworker processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from retrying_consumers import cancel, enqueue, store
from retrying_consumers.models import AttemptRecord, Outcome, Status, TaskRecord
from tests.e2e import cancel_settings, fault_settings
from tests.processes import Child, running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def workers(tmp_path: Path, settings_module: Any, count: int = 2) -> list[Child]:
    return start_workers(
        tmp_path, count, ["fault-a", "fault-sync"], settings_module.__name__
    )


def all_running(ids: list[Any]) -> None:
    wait_until(
        lambda: (
            TaskRecord.objects.filter(pk__in=ids, status=Status.RUNNING).count()
            == len(ids)
        ),
        20,
        f"{len(ids)} tasks to run",
    )


def stopped_at(marker: Path, timeout: float) -> float:
    wait_until(marker.exists, timeout, f"the handler to write {marker.name}")
    return float(marker.read_text())


def test_cancel_stops_a_running_async_attempt_within_a_second(
    tmp_path: Path, settings: Any, redis_client: Any
) -> None:
    settings.RETRYING_CONSUMERS = cancel_settings.RETRYING_CONSUMERS
    children = workers(tmp_path, cancel_settings)
    markers = [tmp_path / f"wait-{n}" for n in range(4)]
    with running(children):
        waiting = [
            enqueue("fault-a", "fault.wait", {"marker": str(m)}) for m in markers
        ]
        all_running(waiting)
        busy = [enqueue("fault-a", "fault.sleep", {"seconds": 1.5}) for _ in range(4)]
        all_running(busy)
        victim = TaskRecord.objects.get(pk=waiting[0])
        asked = time.time()
        cancel(victim.pk, reason="cancelled by a test")

        assert stopped_at(markers[0], 5) - asked < 1.0
        done = TaskRecord.objects.get(pk=victim.pk)
        assert done.status == Status.CANCELLED
        assert done.lease_owner == "" and done.lease_expires_at is None
        [attempt] = AttemptRecord.objects.filter(task_id=victim.pk)
        assert attempt.outcome == Outcome.CANCELLED
        assert attempt.error_message == "cancelled by a test"
        assert attempt.finished_at is not None
        wait_until(
            lambda: (
                "attempt stopped: task_id=" + str(victim.pk)
                in "".join(c.output() for c in children)
            ),
            5,
            "the worker to log the stop",
        )

        # The other attempts, in the same workers, ran on untouched.
        wait_until(
            lambda: (
                TaskRecord.objects.filter(pk__in=busy, status=Status.SUCCEEDED).count()
                == len(busy)
            ),
            20,
            "the busy tasks to succeed",
        )
        assert not any(m.exists() for m in markers[1:])
        assert (
            TaskRecord.objects.filter(pk__in=waiting[1:], status=Status.RUNNING).count()
            == len(waiting) - 1
        )
        for task_id in waiting[1:]:
            cancel(task_id)
        for marker in markers[1:]:
            stopped_at(marker, 5)
        assert all(c.alive() for c in children)

    assert not AttemptRecord.objects.filter(
        task_id__in=waiting, outcome=Outcome.RUNNING
    ).exists()
    assert AttemptRecord.objects.filter(task_id__in=waiting).count() == len(waiting)


def test_a_sync_handler_sees_the_cancel_and_its_result_is_ignored(
    tmp_path: Path, settings: Any, redis_client: Any
) -> None:
    settings.RETRYING_CONSUMERS = cancel_settings.RETRYING_CONSUMERS
    children = workers(tmp_path, cancel_settings)
    marker = tmp_path / "cooperate"
    with running(children):
        task_id = enqueue("fault-sync", "fault.cooperate", {"marker": str(marker)})
        all_running([task_id])
        asked = time.time()
        cancel(task_id)
        assert stopped_at(marker, 5) - asked < 1.0
        wait_until(
            lambda: (
                "attempt stopped: task_id=" + str(task_id)
                in "".join(c.output() for c in children)
            ),
            5,
            "the worker to log the stop",
        )
        # The slot is free again: the channel's next task runs.
        later = enqueue("fault-sync", "fault.block", {"seconds": 0})
        wait_until(
            lambda: TaskRecord.objects.get(pk=later).status == Status.SUCCEEDED,
            20,
            "a later task to succeed",
        )
    task = TaskRecord.objects.get(pk=task_id)
    assert task.status == Status.CANCELLED
    assert task.result is None
    [attempt] = AttemptRecord.objects.filter(task_id=task_id)
    assert attempt.outcome == Outcome.CANCELLED


def test_a_cancel_the_workers_never_hear_of_stops_the_attempt_at_its_lease_renewal(
    tmp_path: Path, settings: Any, redis_client: Any
) -> None:
    # store.cancel() writes the store only: no message reaches the workers, as
    # when the channel layer drops it. Leases of 2 s are renewed every 0.67 s.
    settings.RETRYING_CONSUMERS = fault_settings.RETRYING_CONSUMERS
    children = workers(tmp_path, fault_settings, count=1)
    marker = tmp_path / "wait"
    with running(children):
        task_id = enqueue("fault-a", "fault.wait", {"marker": str(marker)})
        all_running([task_id])
        asked = time.time()
        store.cancel(task_id, reason="cancelled in the store alone")
        assert stopped_at(marker, 5) - asked < 2.0
        assert children[0].alive()
    [attempt] = AttemptRecord.objects.filter(task_id=task_id)
    assert attempt.outcome == Outcome.CANCELLED
    assert TaskRecord.objects.get(pk=task_id).status == Status.CANCELLED
