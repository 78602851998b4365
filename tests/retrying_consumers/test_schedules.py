"""Periodic tasks: declarations, tick computation (time zones, DST), and the
store's claim of each (schedule, tick) under concurrency."""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.checks import Error
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.urls import reverse

from retrying_consumers import schedules, ticking
from retrying_consumers.exceptions import ConfigurationError
from retrying_consumers.models import ScheduleTick, TaskRecord
from retrying_consumers.schedules import LATE_AFTER, Schedule, iter_ticks, parse

BERLIN = "Europe/Berlin"


def at(text: str) -> datetime:
    """A UTC time from ``2026-03-29T01:00:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cron(expression: str, zone: str = "UTC", **more: Any) -> Schedule:
    return parse("s", {"cron": expression, "timezone": zone, **TARGET, **more})


def every(seconds: float, **more: Any) -> Schedule:
    return parse("s", {"every": seconds, **TARGET, **more})


TARGET = {"channel": "reports", "type": "report.build"}


@pytest.fixture(autouse=True)
def no_declared(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test declares its own schedules: none leak between tests."""
    monkeypatch.setattr(schedules, "_declared", {})
    schedules.all_schedules.cache_clear()
    yield
    schedules.all_schedules.cache_clear()


# Intervals --------------------------------------------------------------------


def test_an_interval_ticks_on_multiples_of_its_anchor_and_never_drifts() -> None:
    s = every(300)
    assert s.latest_tick(at("2026-05-01T10:07:59.900000")) == at("2026-05-01T10:05:00")
    assert s.next_tick(at("2026-05-01T10:05:00")) == at("2026-05-01T10:10:00")
    # Whenever it is looked at, ticks stay on the 5-minute grid.
    start = at("2026-05-01T00:00:00")
    ticks = list(iter_ticks(s, start, start + timedelta(days=3)))
    assert len(ticks) == 3 * 24 * 12
    assert all(t.minute % 5 == 0 and t.second == 0 for t in ticks)


def test_an_anchored_interval_counts_from_its_anchor() -> None:
    s = every(3600, anchor="2026-05-01T00:20:00+02:00")
    assert s.next_tick(at("2026-05-01T09:00:00")) == at("2026-05-01T09:20:00")
    assert s.latest_tick(at("2026-04-30T00:00:00")) is None
    assert s.next_tick(at("2026-04-30T00:00:00")) == at("2026-04-30T22:20:00")


# Cron and time zones ----------------------------------------------------------


def test_cron_is_evaluated_in_the_schedules_time_zone() -> None:
    s = cron("0 9 * * *", BERLIN)
    # 09:00 in Berlin is 07:00 UTC in summer, 08:00 in winter.
    assert s.next_tick(at("2026-07-01T00:00:00")) == at("2026-07-01T07:00:00")
    assert s.next_tick(at("2026-12-01T00:00:00")) == at("2026-12-01T08:00:00")
    assert s.latest_tick(at("2026-07-01T07:00:00")) == at("2026-07-01T07:00:00")
    assert s.latest_tick(at("2026-07-01T06:59:59")) == at("2026-06-30T07:00:00")


def test_the_time_zone_defaults_to_settings_time_zone(settings: Any) -> None:
    settings.TIME_ZONE = "America/New_York"
    assert cron("0 9 * * *").timezone == "UTC"  # given explicitly
    assert parse("s", {"cron": "0 9 * * *", **TARGET}).timezone == "America/New_York"


def test_a_daily_tick_in_the_hour_that_spring_forward_skips_runs_once_at_3() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    s = cron("30 2 * * *", BERLIN)
    day = list(iter_ticks(s, at("2026-03-28T12:00:00"), at("2026-03-30T12:00:00")))
    assert day == [at("2026-03-29T01:00:00"), at("2026-03-30T00:30:00")]


def test_a_daily_tick_in_the_hour_that_fall_back_repeats_runs_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 comes twice.
    s = cron("30 2 * * *", BERLIN)
    day = list(iter_ticks(s, at("2026-10-24T12:00:00"), at("2026-10-26T12:00:00")))
    assert day == [at("2026-10-25T00:30:00"), at("2026-10-26T01:30:00")]


def test_hourly_ticks_follow_real_hours_across_dst() -> None:
    s = cron("0 * * * *", BERLIN)
    spring = list(iter_ticks(s, at("2026-03-28T22:59:59"), at("2026-03-29T21:59:59")))
    autumn = list(iter_ticks(s, at("2026-10-24T21:59:59"), at("2026-10-25T22:59:59")))
    assert len(spring) == 23 and len(set(spring)) == 23
    assert len(autumn) == 25 and len(set(autumn)) == 25
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(autumn))


def test_a_six_field_expression_has_seconds_first() -> None:
    s = cron("*/15 * * * * *")
    assert s.next_tick(at("2026-05-01T10:00:01")) == at("2026-05-01T10:00:15")


# Which tick is due -------------------------------------------------------------


def test_the_latest_tick_is_due_once_on_time() -> None:
    s = every(60)
    now = at("2026-05-01T10:00:00.800000")
    assert s.due_tick(now, None) == at("2026-05-01T10:00:00")
    assert s.due_tick(now, at("2026-05-01T10:00:00")) is None
    assert s.due_tick(now, at("2026-05-01T09:59:00")) == at("2026-05-01T10:00:00")


def test_after_downtime_catch_up_once_runs_the_latest_missed_tick_once() -> None:
    s = cron("0 * * * *", catch_up="once")
    last = at("2026-05-01T06:00:00")
    now = at("2026-05-01T10:30:00")  # 07:00 to 10:00 were missed
    assert s.due_tick(now, last) == at("2026-05-01T10:00:00")
    assert s.due_tick(now, at("2026-05-01T10:00:00")) is None


def test_after_downtime_catch_up_skip_waits_for_the_next_tick() -> None:
    s = cron("0 * * * *", catch_up="skip")
    last = at("2026-05-01T06:00:00")
    assert s.due_tick(at("2026-05-01T10:30:00"), last) is None
    assert s.due_tick(at("2026-05-01T11:00:00.5"), last) == at("2026-05-01T11:00:00")


def test_a_tick_found_within_late_after_is_on_time_for_both_choices() -> None:
    now = at("2026-05-01T10:00:00") + LATE_AFTER
    for choice in ("once", "skip"):
        s = cron("0 * * * *", catch_up=choice)
        assert s.due_tick(now, at("2026-05-01T09:00:00")) == at("2026-05-01T10:00:00")


def test_a_new_schedule_does_not_run_a_tick_missed_before_it_existed() -> None:
    s = cron("0 3 * * *", catch_up="once")
    assert s.due_tick(at("2026-05-01T10:00:00"), None) is None
    assert s.due_tick(at("2026-05-02T03:00:01"), None) == at("2026-05-02T03:00:00")


def test_catch_up_defaults_to_once() -> None:
    assert every(60).catch_up == "once"


# Declarations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"cron": "61 * * * *", **TARGET}, "not valid"),
        ({"cron": "0 0 31 2 *", **TARGET}, "cron"),
        ({"cron": "* * * * *", "every": 5, **TARGET}, "exactly one"),
        ({**TARGET}, "exactly one"),
        ({"every": 0.5, **TARGET}, "at least 1 second"),
        ({"every": "5m", **TARGET}, "seconds or a timedelta"),
        ({"every": 5, "timezone": "Mars/Olympus", **TARGET}, "time zone"),
        ({"every": 5, "catch_up": "all", **TARGET}, "catch_up"),
        ({"every": 5, "anchor": "yesterday", **TARGET}, "ISO 8601"),
        ({"every": 5, "anchor": "2026-01-01T00:00:00", **TARGET}, "aware"),
        ({"cron": "* * * * *", "anchor": "2026-01-01T00:00:00Z", **TARGET}, "anchor"),
        ({"every": 5, "channel": "bad channel!", "type": "x"}, "channel"),
        ({"every": 5, "channel": "c"}, "type"),
        ({"every": 5, "cron_expr": "x", **TARGET}, "unknown key"),
        ({"every": 5, **TARGET, "payload": {"when": datetime.now()}}, "payload"),
        ({"every": 5, "task": "tests.nowhere.nothing"}, "cannot be imported"),
        ({"every": 5, "task": "tests.django_tasks_defs.quick_backoff"}, "@task"),
        ({"every": 5, "task": "tests.django_tasks_defs.echo", **TARGET}, "task="),
        ({"every": 5, **TARGET, "args": [1]}, "args="),
    ],
)
def test_a_bad_declaration_names_the_schedule_and_the_problem(
    spec: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigurationError, match="periodic task 'nightly'") as info:
        parse("nightly", spec)
    assert words in str(info.value)


def test_periodic_declares_a_task_function_and_a_consumer_type() -> None:
    from tests.django_tasks_defs import echo

    assert schedules.periodic(every=60, args=[1], kwargs={"a": 2})(echo) is echo

    @schedules.periodic("hourly-report", cron="0 * * * *", **TARGET)
    class ReportConsumer:
        pass

    found = schedules.all_schedules()
    assert set(found) == {"tests.django_tasks_defs.echo", "hourly-report"}
    task_schedule = found["tests.django_tasks_defs.echo"]
    assert task_schedule.task == "tests.django_tasks_defs.echo"
    assert (task_schedule.args, task_schedule.kwargs) == ((1,), {"a": 2})
    assert found["hourly-report"].target == "reports:report.build"


def test_periodic_is_exported_from_the_package() -> None:
    import retrying_consumers

    assert retrying_consumers.periodic is schedules.periodic


def test_two_different_schedules_under_one_name_are_refused() -> None:
    schedules.periodic("n", every=60, **TARGET)(object)
    schedules.periodic("n", every=60, **TARGET)(object)  # the same again: fine
    with pytest.raises(ConfigurationError, match="two periodic tasks"):
        schedules.periodic("n", every=30, **TARGET)(object)


def test_a_name_in_settings_and_in_a_decorator_is_refused(settings: Any) -> None:
    settings.RETRYING_CONSUMERS = {"SCHEDULES": {"n": {"every": 5, **TARGET}}}
    schedules.periodic("n", every=60, **TARGET)(object)
    with pytest.raises(ConfigurationError, match="both in settings"):
        schedules.all_schedules()


def test_the_system_check_reports_a_bad_schedule(settings: Any) -> None:
    from retrying_consumers.checks import check_schedules

    settings.RETRYING_CONSUMERS = {"SCHEDULES": {"n": {"cron": "bad", **TARGET}}}
    [error] = check_schedules()
    assert isinstance(error, Error) and error.id == "retrying_consumers.E004"
    assert "periodic task 'n'" in error.msg
    settings.RETRYING_CONSUMERS = {"SCHEDULES": {"n": {"cron": "* * * * *", **TARGET}}}
    assert check_schedules() == []


def test_schedules_must_be_a_dict(settings: Any) -> None:
    from retrying_consumers.conf import LibrarySettings

    settings.RETRYING_CONSUMERS = {"SCHEDULES": [("n", {})]}
    with pytest.raises(ConfigurationError, match="SCHEDULES"):
        LibrarySettings.load()


# The store's claim -------------------------------------------------------------


def settle(settings: Any, **declared: dict[str, Any]) -> None:
    settings.RETRYING_CONSUMERS = {"SCHEDULES": declared}


@pytest.mark.django_db
def test_a_due_tick_becomes_one_task_with_its_tick_key(settings: Any) -> None:
    settle(settings, report={"every": 60, **TARGET, "payload": {"k": 1}})
    now = at("2026-05-01T10:00:00.5")
    [task_id] = ticking.run_due_schedules(now)
    assert ticking.run_due_schedules(now) == []
    assert ticking.run_due_schedules(now + timedelta(seconds=30)) == []
    task = TaskRecord.objects.get(pk=task_id)
    assert (task.channel, task.type, task.payload) == (
        "reports",
        "report.build",
        {"k": 1},
    )
    assert task.idempotency_key == "schedule:report@2026-05-01T10:00:00+00:00"
    tick = ScheduleTick.objects.get()
    assert (tick.schedule, tick.tick_at, tick.task_id) == (
        "report",
        at("2026-05-01T10:00:00"),
        task_id,
    )
    [second] = ticking.run_due_schedules(now + timedelta(seconds=60))
    assert second != task_id


@pytest.mark.django_db
def test_a_task_function_schedule_enqueues_the_task_with_its_arguments(
    settings: Any,
) -> None:
    settle(
        settings,
        echo={
            "every": 60,
            "task": "tests.django_tasks_defs.echo",
            "args": [1],
            "kwargs": {"x": "y"},
        },
    )
    [task_id] = ticking.run_due_schedules(at("2026-05-01T10:00:00.5"))
    task = TaskRecord.objects.get(pk=task_id)
    assert task.type == "django.task.tests.django_tasks_defs.echo"
    assert (task.payload["args"], task.payload["kwargs"]) == ([1], {"x": "y"})


@pytest.mark.django_db
def test_a_worker_wakes_just_after_the_next_tick_or_after_max_wait(
    settings: Any,
) -> None:
    settle(settings)
    assert ticking.tick(1.0, at("2026-05-01T10:00:30")) == 1.0
    settle(settings, a={"every": 60, **TARGET}, b={"cron": "0 10 * * *", **TARGET})
    now = at("2026-05-01T10:00:30")
    wait = ticking.tick(100.0, now)
    assert wait == pytest.approx(30 + ticking.WAKE_AFTER)
    assert ScheduleTick.objects.count() == 2  # both took their 10:00 tick
    assert ticking.tick(1, now) == 1.0
    assert isinstance(ticking.tick(1, now), float)


@pytest.mark.django_db
def test_after_downtime_the_store_runs_one_missed_tick_or_none(settings: Any) -> None:
    settle(
        settings,
        once={"cron": "0 * * * *", **TARGET},
        skip={"cron": "0 * * * *", "catch_up": "skip", **TARGET},
    )
    assert len(ticking.run_due_schedules(at("2026-05-01T06:00:01"))) == 2
    # Down from 06:30 to 10:30: four ticks missed.
    [caught_up] = ticking.run_due_schedules(at("2026-05-01T10:30:00"))
    assert TaskRecord.objects.filter(
        pk=caught_up, idempotency_key__contains="once@"
    ).exists()
    assert ticking.run_due_schedules(at("2026-05-01T10:45:00")) == []
    assert len(ticking.run_due_schedules(at("2026-05-01T11:00:02"))) == 2
    counts = {
        s: ScheduleTick.objects.filter(schedule=s).count() for s in ("once", "skip")
    }
    assert counts == {"once": 3, "skip": 2}


@pytest.mark.django_db
def test_removed_and_renamed_schedules_break_nothing(settings: Any) -> None:
    settle(settings, old={"every": 60, **TARGET})
    ticking.run_due_schedules(at("2026-05-01T10:00:00.5"))
    settle(settings, new={"every": 60, **TARGET})
    assert len(ticking.run_due_schedules(at("2026-05-01T10:01:00.5"))) == 1
    assert ticking.last_ticks(["old", "new"]).keys() == {"old", "new"}


@pytest.mark.django_db
def test_a_failing_schedule_is_logged_and_the_others_still_tick(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle(settings, a={"every": 60, **TARGET}, b={"every": 60, **TARGET})
    real = ticking.enqueue_tick

    def flaky(schedule: Schedule, tick: datetime) -> Any:
        if schedule.name == "a":
            raise ValueError("no")
        return real(schedule, tick)

    monkeypatch.setattr(ticking, "enqueue_tick", flaky)
    [task_id] = ticking.run_due_schedules(at("2026-05-01T10:00:00.5"))
    assert ScheduleTick.objects.get().task_id == task_id  # a's row rolled back
    assert TaskRecord.objects.get().pk == task_id
    [record] = [r for r in caplog.records if getattr(r, "outcome", "") == "tick_failed"]
    assert record.schedule == "a"


@pytest.mark.django_db(transaction=True)
def test_racing_workers_take_each_tick_once(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads with their own connections race for the same ticks; enqueueing
    is slowed down so that they all reach the claim before any commits. A
    ``@task`` target has no idempotency key: the tick's row alone decides."""
    settle(settings, race={"every": 1, "task": "tests.django_tasks_defs.echo"})
    real = ticking.enqueue_tick

    def slow(schedule: Schedule, tick: datetime) -> Any:
        time.sleep(0.05)
        return real(schedule, tick)

    monkeypatch.setattr(ticking, "enqueue_tick", slow)
    schedule = schedules.all_schedules()["race"]
    ticks = [at("2026-05-01T10:00:00") + timedelta(seconds=n) for n in range(10)]
    won: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        try:
            for tick in ticks:
                barrier.wait()
                task_id = ticking.take_tick(schedule, tick)
                if task_id is not None:
                    won.append(task_id)
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(won) == len(ticks)
    assert TaskRecord.objects.count() == len(ticks)
    assert ScheduleTick.objects.filter(schedule="race").count() == len(ticks)
    assert set(ScheduleTick.objects.values_list("task_id", flat=True)) == set(won)


# Operations ---------------------------------------------------------------------


def tasks_command(*args: str) -> str:
    out = io.StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_tasks_schedules_lists_next_and_last_runs(settings: Any) -> None:
    settle(
        settings,
        report={"cron": "0 3 * * *", "timezone": BERLIN, **TARGET},
        echo={"every": 60, "task": "tests.django_tasks_defs.echo"},
    )
    [task_id] = ticking.run_due_schedules(datetime.now(UTC))  # echo's tick
    [echo, report] = json.loads(tasks_command("schedules", "--json"))
    assert echo["name"] == "echo" and echo["target"] == "tests.django_tasks_defs.echo"
    assert echo["expression"] == "every 60s"
    assert echo["last_task_id"] == str(task_id) and echo["last_status"] == "queued"
    assert datetime.fromisoformat(echo["next_run"]) > datetime.now(UTC)
    assert report["target"] == "reports:report.build"
    assert (report["timezone"], report["catch_up"]) == (BERLIN, "once")
    assert report["last_tick"] is None and report["last_status"] is None
    next_run = datetime.fromisoformat(report["next_run"]).astimezone(ZoneInfo(BERLIN))
    assert (next_run.hour, next_run.minute) == (3, 0)
    text = tasks_command("schedules")
    assert "report" in text and "0 3 * * *" in text and str(task_id) in text


@pytest.mark.django_db
def test_tasks_schedules_with_none_declared_or_a_bad_one(settings: Any) -> None:
    settle(settings)
    assert "no periodic tasks declared" in tasks_command("schedules")
    settle(settings, bad={"cron": "nope", **TARGET})
    with pytest.raises(CommandError, match="periodic task 'bad'"):
        tasks_command("schedules")


@pytest.mark.django_db
def test_the_admin_lists_ticks_read_only(admin_client: Any, settings: Any) -> None:
    settle(settings, report={"every": 60, **TARGET})
    [task_id] = ticking.run_due_schedules(at("2026-05-01T10:00:00.5"))
    url = reverse("admin:retrying_consumers_scheduletick_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200
    assert str(task_id) in page.content.decode()
    tick = ScheduleTick.objects.get()
    change = reverse("admin:retrying_consumers_scheduletick_change", args=[tick.pk])
    assert admin_client.post(change, {"schedule": "x"}).status_code == 403
    assert (
        admin_client.get(
            reverse("admin:retrying_consumers_scheduletick_add")
        ).status_code
        == 403
    )


@pytest.mark.django_db
def test_old_ticks_are_purged_but_each_schedules_latest_is_kept() -> None:
    now = at("2026-05-20T00:00:00")
    for name, days in [("daily", 1), ("daily", 9), ("daily", 10), ("yearly", 200)]:
        ScheduleTick.objects.create(schedule=name, tick_at=now - timedelta(days=days))
    assert ticking.purge_old_ticks(now) == 2
    kept = sorted(ScheduleTick.objects.values_list("schedule", "tick_at"))
    assert kept == [
        ("daily", now - timedelta(days=1)),
        ("yearly", now - timedelta(days=200)),
    ]


@pytest.mark.django_db
def test_a_store_outage_reaches_the_worker_which_waits_it_out(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settle(settings, a={"every": 60, **TARGET})

    def away(schedule: Schedule, tick: datetime) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(ticking, "enqueue_tick", away)
    with pytest.raises(OperationalError):
        ticking.run_due_schedules(at("2026-05-01T10:00:00.5"))
    assert not [r for r in caplog.records if getattr(r, "outcome", "") == "tick_failed"]
    assert ScheduleTick.objects.count() == 0  # taken again once the store is back


@pytest.mark.django_db
def test_bad_declarations_at_run_time_are_logged_once(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ticking, "_reported", set())
    settle(settings, bad={"cron": "nope", **TARGET})
    assert ticking.run_due_schedules() == []
    assert ticking.run_due_schedules() == []
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1 and "periodic task 'bad'" in critical[0].getMessage()


def test_a_worker_runs_its_tick_loop_only_when_schedules_are_declared(
    settings: Any,
) -> None:
    # A loop that touches no store would report the store back during outages.
    settle(settings)
    assert ticking.declared() is False
    settle(settings, a={"every": 60, **TARGET})
    assert ticking.declared() is True
    settle(settings, bad={"cron": "nope", **TARGET})
    assert ticking.declared() is True  # so that the worker says why none runs
