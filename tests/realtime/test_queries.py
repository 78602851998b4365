"""What the dashboard reads from the store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from realtime import queries
from retrying_consumers.models import Status, TaskRecord, WorkerRecord

pytestmark = pytest.mark.django_db


def worker(name: str, seconds_ago: float) -> None:
    beat = timezone.now() - timedelta(seconds=seconds_ago)
    WorkerRecord.objects.create(
        id=name,
        host="h",
        pid=1,
        channels=["a"],
        concurrency=2,
        running=["t1"],
        started_at=beat,
        heartbeat_at=beat,
    )


def test_only_live_workers_are_shown_and_only_to_staff() -> None:
    worker("h:1", 1)
    worker("h:2", 60)  # died without a word
    users = get_user_model().objects
    staff = users.create_user("boss", is_staff=True)
    person = users.create_user("ada")
    shown = queries.stats(staff, "all")["workers"]
    assert [(w["id"], w["channels"], w["running"]) for w in shown] == [
        ("h:1", ["a"], ["t1"])
    ]
    assert queries.stats(person, "mine")["workers"] == []


def make(
    n: int = 1, *, owner: Any = None, channel: str = "work", **fields: Any
) -> list[TaskRecord]:
    """``n`` tasks, created a second apart (the last newest), with ``fields``."""
    now = timezone.now()
    made = []
    for i in range(n):
        task = TaskRecord.objects.create(
            channel=channel, type=f"job.{i}", owner=owner, **fields
        )
        created = now - timedelta(seconds=n - i)
        TaskRecord.objects.filter(pk=task.pk).update(created_at=created)
        task.created_at = created
        made.append(task)
    return made


def staff_user(name: str = "boss") -> Any:
    """Staff who may see every task (the view permission)."""
    made = get_user_model().objects.create_user(name, is_staff=True)
    made.user_permissions.add(Permission.objects.get(codename="view_taskrecord"))
    return get_user_model().objects.get(pk=made.pk)


def test_pages_have_totals_and_never_overlap_or_skip() -> None:
    boss = staff_user()
    made = make(120)
    pages = [queries.task_page(boss, number=n, size=50) for n in (1, 2, 3)]
    assert [p.total for p in pages] == [120, 120, 120]
    assert [len(p.tasks) for p in pages] == [50, 50, 20]
    assert (pages[0].pages, pages[2].first, pages[2].last) == (3, 101, 120)
    seen = [task.pk for page in pages for task in page.tasks]
    assert seen == [task.pk for task in reversed(made)]  # newest first, all once
    oldest_first = queries.task_page(boss, descending=False, size=25)
    assert [t.pk for t in oldest_first.tasks] == [t.pk for t in made[:25]]
    # A page past the end shows the last page; an unknown size the default.
    assert queries.task_page(boss, number=99, size=7).number == -(
        -120 // queries.PAGE_SIZE
    )


def test_sorting_by_finished_duration_and_next_try_puts_missing_values_last() -> None:
    boss = staff_user()
    now = timezone.now()
    quick, slow, unfinished = make(3)
    for task, took, ended in ((quick, 1, 30), (slow, 20, 60)):
        TaskRecord.objects.filter(pk=task.pk).update(
            status=Status.SUCCEEDED,
            started_at=now - timedelta(seconds=ended + took),
            finished_at=now - timedelta(seconds=ended),
        )
    soon, later = make(2, status=Status.RETRYING)
    TaskRecord.objects.filter(pk=soon.pk).update(due_at=now + timedelta(seconds=5))
    TaskRecord.objects.filter(pk=later.pk).update(due_at=now + timedelta(seconds=50))

    def order(sort: str, descending: bool = True) -> list[Any]:
        page = queries.task_page(boss, sort=sort, descending=descending, size=25)
        return [task.pk for task in page.tasks]

    assert order("finished")[:2] == [quick.pk, slow.pk]
    assert order("duration")[:2] == [slow.pk, quick.pk]
    assert order("duration", descending=False)[:2] == [quick.pk, slow.pk]
    assert order("next", descending=False)[:2] == [soon.pk, later.pk]
    assert unfinished.pk in order("finished")[2:]


def test_search_finds_what_the_list_shows() -> None:
    boss = staff_user()
    target, other = make(2)
    TaskRecord.objects.filter(pk=target.pk).update(
        error_class="ConnectionResetError", error_message="peer went away"
    )

    def found(text: str) -> list[Any]:
        return [task.pk for task in queries.task_page(boss, text=text).tasks]

    short = str(target.pk)[:8]
    assert found(short) == [target.pk]  # the short id the list shows
    assert found(short.upper() + "…") == [target.pk]
    assert found(str(target.pk)) == [target.pk]
    assert found("ConnectionReset") == [target.pk]  # the error class
    assert found("went away") == [target.pk]
    assert set(found("job.")) == {target.pk, other.pk}
    assert queries.task_page(boss, error_class="ConnectionResetError").total == 1


def test_people_page_through_their_own_tasks_only() -> None:
    users = get_user_model().objects
    ada, bob = users.create_user("ada"), users.create_user("bob")
    make(3, owner=ada)
    make(2, owner=bob)
    assert queries.task_page(ada).total == 3
    assert queries.task_page(bob).total == 2
    assert queries.task_page(staff_user()).total == 5


def test_backlog_shows_oldest_queued_age_and_unserved_channels() -> None:
    boss = staff_user()
    worker("h:1", 1)  # live, serves "a"
    make(3, channel="a")
    make(2, channel="nobody-serves")
    backlog = queries.stats(boss, "all")["backlog"]
    assert backlog["a"]["served"] is True
    assert backlog["nobody-serves"]["served"] is False
    assert backlog["a"]["queued"] == 3
    assert 2 <= backlog["a"]["oldest_queued_seconds"] <= 5
    assert 1 <= backlog["nobody-serves"]["oldest_queued_seconds"] <= 4


def test_busy_is_read_from_the_leases_held_now_not_the_heartbeat() -> None:
    boss = staff_user()
    worker("h:1", 1)  # its heartbeat says it runs one task
    make(3, status=Status.RUNNING, lease_owner="h:1")
    make(1, status=Status.RUNNING, lease_owner="h:elsewhere")
    (shown,) = queries.stats(boss, "all")["workers"]
    assert (shown["busy"], shown["concurrency"]) == (3, 2)


def test_chart_separates_succeeded_from_dead_over_each_range() -> None:
    boss = staff_user()
    now = timezone.now()
    for status, ago in (
        (Status.SUCCEEDED, 5),
        (Status.SUCCEEDED, 5),
        (Status.DEAD, 5),
        (Status.SUCCEEDED, 1800),
    ):
        (task,) = make(1)
        TaskRecord.objects.filter(pk=task.pk).update(
            status=status, finished_at=now - timedelta(seconds=ago)
        )
    tasks = queries.visible_tasks(boss)
    short = queries.throughput(tasks, "5m", now=now)
    assert (sum(short["succeeded"]), sum(short["dead"])) == (2, 1)
    assert len(short["succeeded"]) == 30 and short["succeeded"][-1] == 2
    hour = queries.throughput(tasks, "hour", now=now)
    assert (sum(hour["succeeded"]), sum(hour["dead"]), hour["bucket_seconds"]) == (
        3,
        1,
        60,
    )
    day = queries.throughput(tasks, "day", now=now)
    assert len(day["dead"]) == 48 and day["range"] == "day"
    assert queries.throughput(tasks, "bogus", now=now)["range"] == "5m"


def test_failures_are_grouped_by_error_class() -> None:
    boss = staff_user()
    make(3, status=Status.DEAD, error_class="Timeout")
    make(1, status=Status.RETRYING, error_class="Timeout")
    make(2, status=Status.DEAD, error_class="KeyError")
    make(1, status=Status.SUCCEEDED, error_class="Recovered")
    groups = queries.failure_groups(boss)
    assert [(g["error_class"], g["dead"], g["retrying"]) for g in groups] == [
        ("Timeout", 3, 1),
        ("KeyError", 2, 0),
    ]
