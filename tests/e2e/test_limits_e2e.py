"""Limits per message type hold across real runworker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retrying_consumers import enqueue
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.e2e.fault_settings import RETRYING_CONSUMERS
from tests.processes import running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def short_rings(settings: Any, redis_client: Any) -> None:
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS


def all_succeeded(ids: list[Any], timeout: float) -> None:
    wait_until(
        lambda: (
            TaskRecord.objects.filter(pk__in=ids, status=Status.SUCCEEDED).count()
            == len(ids)
        ),
        timeout,
        f"{len(ids)} tasks to succeed",
    )


def most_at_once(ids: list[Any]) -> int:
    """The most attempts that ran at the same moment, from their records."""
    edges = []
    for attempt in AttemptRecord.objects.filter(task_id__in=ids):
        edges += [(attempt.started_at, 1), (attempt.finished_at, -1)]
    edges.sort(key=lambda edge: (edge[0], edge[1]))  # an end before a start
    most = now = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


def test_max_running_holds_across_three_workers_of_32_slots(tmp_path: Path) -> None:
    children = start_workers(tmp_path, 3, ["fault-a"], "tests.e2e.fault_settings")
    with running(children):
        ids = [enqueue("fault-a", "fault.limited", {"seconds": 0.3}) for _ in range(40)]
        all_succeeded(ids, 60)
        assert all(c.alive() for c in children)
    assert most_at_once(ids) == 5
    attempts = AttemptRecord.objects.filter(task_id__in=ids)
    assert attempts.count() == len(ids), "held back, never failed or re-run"
    assert len({a.worker for a in attempts}) >= 2, "spread over the workers"


def test_a_rate_limit_holds_across_workers(tmp_path: Path) -> None:
    children = start_workers(tmp_path, 2, ["fault-a"], "tests.e2e.fault_settings")
    with running(children):
        ids = [enqueue("fault-a", "fault.paced") for _ in range(16)]
        all_succeeded(ids, 60)
    starts = sorted(
        AttemptRecord.objects.filter(task_id__in=ids).values_list(
            "started_at", flat=True
        )
    )
    assert len(starts) == len(ids)
    # "5/s": no six starts within one second, anywhere in the run.
    for earlier, later in zip(starts, starts[5:], strict=False):
        assert (later - earlier).total_seconds() >= 1.0
    assert (starts[-1] - starts[0]).total_seconds() < 8, "and not much slower"
