"""Follow-up tasks through real runworker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retrying_consumers import enqueue, enqueue_group
from retrying_consumers.models import Status, TaskGroup, TaskRecord
from tests.e2e.fault_settings import RETRYING_CONSUMERS
from tests.processes import running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def short_rings(settings: Any, redis_client: Any) -> None:
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS


def succeeded(**filters: Any) -> TaskRecord | None:
    return TaskRecord.objects.filter(status=Status.SUCCEEDED, **filters).first()


def test_a_chain_and_a_group_run_to_their_follow_ups(tmp_path: Path) -> None:
    children = start_workers(
        tmp_path, 2, ["fault-a", "fault-b"], "tests.e2e.fault_settings"
    )
    with running(children):
        first = enqueue(
            "fault-a",
            "fault.noop",
            then=[("fault-b", "fault.sleep", {"seconds": 0.05})],
        )
        group_id, members = enqueue_group(
            [("fault-a", "fault.sleep", {"seconds": 0.2}) for _ in range(6)],
            then=("fault-b", "fault.noop", {"report": True}),
        )
        wait_until(
            lambda: succeeded(parent_id=first) and succeeded(parent_id=group_id),
            30,
            "both follow-ups to succeed",
        )
        assert all(c.alive() for c in children)

    parent = TaskRecord.objects.get(pk=first)
    [child] = TaskRecord.objects.filter(parent_id=first)
    assert child.payload["parent_result"] == parent.result
    assert child.payload["parent_id"] == str(first)
    [callback] = TaskRecord.objects.filter(parent_id=group_id)
    results = callback.payload["results"]
    assert [r["task_id"] for r in results] == [str(m) for m in members]
    assert {r["status"] for r in results} == {"succeeded"}
    assert TaskGroup.objects.get(pk=group_id).callback_id == callback.pk
