"""Follow-up tasks: chains and groups, recorded with their parents."""

from __future__ import annotations

import json
import logging
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, transaction
from django.urls import reverse

from retrying_consumers import (
    attempts,
    cancel,
    enqueue,
    enqueue_group,
    followups,
    store,
)
from retrying_consumers.exceptions import InvalidArgument, InvalidPayload
from retrying_consumers.health import StoreHealth
from retrying_consumers.models import Status, TaskGroup, TaskRecord

pytestmark = pytest.mark.django_db(transaction=True)

RING = 30.0


@pytest.fixture(autouse=True)
def _routes(settings: Any) -> None:
    settings.ASGI_APPLICATION = "tests.e2e.fault_app.application"


def succeed(task_id: Any, result: Any) -> TaskRecord:
    claimed = store.claim(
        task_id, 1, worker="w:1", lease_seconds=60, default_max_attempts=3
    )
    assert claimed is not None
    done = store.succeed(task_id, 1, worker="w:1", result=result)
    assert done is not None
    return done


def test_then_is_stored_in_the_task_row_itself() -> None:
    task_id = enqueue(
        "fault-a", "fault.noop", {"n": 1}, then=[("fault-b", "fault.sleep", {"s": 2})]
    )
    task = TaskRecord.objects.get(pk=task_id)
    assert task.followups == [
        {"channel": "fault-b", "type": "fault.sleep", "payload": {"s": 2}}
    ]
    assert not task.followed_up


@pytest.mark.parametrize(
    ("then", "words"),
    [
        ("fault-a", "must be a list"),
        ([("fault-a",)], r"then\[0\]"),
        ([("fault-a", "fault.noop", {"parent_result": 1})], "parent_result"),
        ([("bad channel!", "fault.noop")], "channel"),
        ([{"channel": "fault-a", "type": "fault.noop", "when": 1}], "unknown keys"),
    ],
)
def test_a_bad_follow_up_is_refused_and_nothing_is_stored(
    then: Any, words: str
) -> None:
    with pytest.raises(InvalidArgument, match=words):
        enqueue("fault-a", "fault.noop", then=then)
    assert not TaskRecord.objects.exists()


def test_a_follow_up_payload_is_checked_like_any_payload() -> None:
    with pytest.raises(InvalidPayload, match=r"payload\['x'\]"):
        enqueue("fault-a", "fault.noop", then=[("fault-a", "fault.noop", {"x": {1}})])
    assert not TaskRecord.objects.exists()


def test_a_success_enqueues_its_follow_ups_once_with_its_result() -> None:
    parent = enqueue(
        "fault-a",
        "fault.noop",
        then=[("fault-a", "fault.sleep", {"seconds": 0}), ("fault-b", "fault.noop")],
    )
    assert followups.fire_task(parent, RING) == [], "not succeeded yet"
    succeed(parent, {"rows": 7})
    children = followups.fire_task(parent, RING)
    assert [(c.channel, c.type) for c in children] == [
        ("fault-a", "fault.sleep"),
        ("fault-b", "fault.noop"),
    ]
    stored = TaskRecord.objects.get(pk=children[0].pk)
    assert stored.status == Status.QUEUED and stored.parent_id == parent
    assert stored.payload == {
        "seconds": 0,
        "parent_id": str(parent),
        "parent_result": {"rows": 7},
    }
    assert followups.fire_task(parent, RING) == []
    assert followups.sweep(RING) == []
    assert TaskRecord.objects.filter(parent_id=parent).count() == 2


def test_the_sweep_enqueues_follow_ups_that_nobody_fired() -> None:
    parent = enqueue("fault-a", "fault.noop", then=[("fault-a", "fault.noop")])
    succeed(parent, "done")  # as if the worker died before it fired them
    [child] = followups.sweep(RING)
    assert child.parent_id == parent
    assert followups.sweep(RING) == []


def test_a_dead_task_enqueues_no_follow_up() -> None:
    parent = enqueue("fault-a", "fault.noop", then=[("fault-a", "fault.noop")])
    cancel(parent)
    assert followups.sweep(RING) == []
    assert TaskRecord.objects.count() == 1


def test_a_group_is_stored_in_one_transaction() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_group(
            [("fault-a", "fault.noop"), ("fault-a", "fault.noop")],
            then=("fault-b", "fault.noop"),
        )
        raise RuntimeError("the caller's transaction rolls back")
    assert not TaskRecord.objects.exists() and not TaskGroup.objects.exists()


def test_a_group_fires_once_all_its_tasks_have_ended_in_any_way() -> None:
    group_id, ids = enqueue_group(
        [
            ("fault-a", "fault.noop", {"n": 1}),
            ("fault-b", "fault.noop", {"n": 2}),
            ("fault-a", "fault.noop", {"n": 3}),
        ],
        then=("fault-b", "fault.sleep", {"seconds": 0}),
    )
    assert set(TaskRecord.objects.values_list("group_id", flat=True)) == {group_id}
    succeed(ids[0], "one")
    assert followups.fire_group(group_id, RING) == []
    cancel(ids[2])
    assert followups.sweep(RING) == [], "one task still runs"
    succeed(ids[1], "two")
    [callback] = followups.sweep(RING)
    assert callback.parent_id == group_id
    assert callback.payload == {
        "seconds": 0,
        "group_id": str(group_id),
        "results": [
            {"task_id": str(ids[0]), "status": "succeeded", "result": "one"},
            {"task_id": str(ids[1]), "status": "succeeded", "result": "two"},
            {"task_id": str(ids[2]), "status": "cancelled", "result": None},
        ],
    }
    assert followups.fire_group(group_id, RING) == []
    assert TaskGroup.objects.get().callback_id == callback.pk


def test_a_cancel_that_ends_a_group_fires_it() -> None:
    group_id, [only] = enqueue_group(
        [("fault-a", "fault.noop")], then=("fault-a", "fault.noop")
    )
    cancel(only)
    assert TaskGroup.objects.get().fired_at is not None
    assert TaskRecord.objects.filter(parent_id=group_id).count() == 1


@pytest.mark.parametrize(
    ("tasks", "then", "words"),
    [
        ([], ("fault-a", "fault.noop"), "non-empty"),
        (
            [("fault-a", "fault.noop")],
            ("fault-a", "fault.noop", {"results": 1}),
            "results",
        ),
        ([("fault-a", "x.y"), ("no where", "x.y")], ("fault-a", "x.y"), r"tasks\[1\]"),
    ],
)
def test_a_bad_group_is_refused_and_nothing_is_stored(
    tasks: Any, then: Any, words: str
) -> None:
    with pytest.raises(InvalidArgument, match=words):
        enqueue_group(tasks, then=then)
    assert not TaskRecord.objects.exists() and not TaskGroup.objects.exists()


def test_tasks_show_and_the_admin_link_parents_and_children(admin_client: Any) -> None:
    parent = enqueue("fault-a", "fault.noop", then=[("fault-b", "fault.noop")])
    succeed(parent, 1)
    [child] = followups.fire_task(parent, RING)
    out = StringIO()
    call_command("tasks", "show", str(parent), stdout=out)
    assert f"follow-ups  {child.pk}" in out.getvalue()
    assert "then  fault-b:fault.noop" in out.getvalue()
    out = StringIO()
    call_command("tasks", "show", str(child.pk), "--json", stdout=out)
    assert json.loads(out.getvalue())["parent_id"] == str(parent)

    page = admin_client.get(
        reverse("admin:retrying_consumers_taskrecord_change", args=[child.pk])
    )
    parent_url = reverse("admin:retrying_consumers_taskrecord_change", args=[parent])
    assert parent_url in page.content.decode()
    page = admin_client.get(parent_url)
    child_url = reverse("admin:retrying_consumers_taskrecord_change", args=[child.pk])
    assert child_url in page.content.decode()


def test_groups_and_limiters_are_listed_read_only_in_the_admin(
    admin_client: Any,
) -> None:
    group_id, [only] = enqueue_group(
        [("fault-a", "fault.noop")], then=("fault-b", "fault.noop")
    )
    cancel(only)
    page = admin_client.get(reverse("admin:retrying_consumers_taskgroup_changelist"))
    assert str(group_id) in page.content.decode()
    assert "fault-b: fault.noop" in page.content.decode()
    callback = TaskGroup.objects.get().callback_id
    page = admin_client.get(
        reverse("admin:retrying_consumers_taskgroup_change", args=[group_id])
    )
    assert str(callback) in page.content.decode()
    assert (
        admin_client.get(reverse("admin:retrying_consumers_taskgroup_add")).status_code
        == 403
    )
    page = admin_client.get(reverse("admin:retrying_consumers_tasklimiter_changelist"))
    assert page.status_code == 200


@pytest.mark.parametrize(
    ("error", "logged"),
    [(OperationalError("server closed the connection"), False), (KeyError("x"), True)],
)
async def test_follow_ups_a_worker_cannot_fire_are_left_to_the_sweep(
    error: Exception, logged: bool, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    health = StoreHealth()
    monkeypatch.setattr(attempts, "store_health", health)

    async def fails(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(followups, "afire_after", fails)
    task = TaskRecord(channel="fault-a", type="fault.noop", followups=[{}])
    with caplog.at_level(logging.WARNING, logger="retrying_consumers.consumers"):
        await attempts._follow_up(task)
    # An outage is counted with the store's others, logged once at its start by
    # StoreHealth; anything else is one warning here.
    assert health.down is not logged
    assert ("left to the scheduler" in caplog.text) is logged
