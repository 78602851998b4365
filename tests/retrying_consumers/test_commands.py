"""``manage.py tasks``: every subcommand with good and bad arguments."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from retrying_consumers.management.commands.tasks import Command
from retrying_consumers.management.tables import parse_age, table
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.retrying_consumers.ops_factories import make, worker

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def tasks(*args: str) -> str:
    out = StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue()


def tasks_json(*args: str) -> Any:
    return json.loads(tasks(*args, "--json"))


def status_of(task: TaskRecord) -> str:
    return TaskRecord.objects.get(pk=task.pk).status


def from_command_line(capsys, *args: str) -> tuple[int, str]:
    """Run as ``manage.py tasks ...`` does: the exit status and standard error."""
    with pytest.raises(SystemExit) as exit_info:
        Command().run_from_argv(["manage.py", "tasks", *args])
    return int(exit_info.value.code), capsys.readouterr().err


# list ------------------------------------------------------------------------------


def test_list_filters_and_prints_a_table() -> None:
    dead = make(Status.DEAD, channel="mail", type="mail.send", error=("SMTPError", "x"))
    ok = make(Status.SUCCEEDED, channel="thumbs", type="thumb.make")
    old = make(Status.QUEUED, channel="thumbs", created_ago=10 * DAY)

    text = tasks("list")
    header, *rows = text.splitlines()
    assert header.split() == [
        "id", "status", "channel", "type", "attempt", "error", "created",
    ]  # fmt: skip
    assert len(rows) == 3 and rows[0].startswith(str(ok.id))  # newest first

    def listed(*args: str) -> set[str]:
        return {t["id"] for t in tasks_json("list", *args)}

    assert listed("--status", "dead") == {str(dead.id)}
    assert listed("--status", "dead", "--status", "queued") == {
        str(dead.id),
        str(old.id),
    }
    assert listed("--channel", "thumbs") == {str(ok.id), str(old.id)}
    assert listed("--type", "mail.send") == {str(dead.id)}
    assert listed("--error", "smtperror") == {str(dead.id)}
    assert listed("--older-than", "7d") == {str(old.id)}
    assert listed("--newer-than", "1h") == {str(dead.id), str(ok.id)}
    assert len(tasks_json("list", "--limit", "1")) == 1
    assert tasks("list", "--channel", "nothing-here").strip() == "no tasks match"


def test_list_json_carries_the_task_fields() -> None:
    task = make(Status.RETRYING, payload={"image": 7}, attempts=2)
    [data] = tasks_json("list")
    assert data["id"] == str(task.id)
    assert (data["status"], data["attempt"], data["max_attempts"]) == ("retrying", 2, 3)
    assert data["payload"] == {"image": 7}
    assert data["error"] == {"class": "ConnectionError", "message": "refused"}
    assert data["next_attempt_at"] is not None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["list", "--status", "lost"], "invalid choice: 'lost'"),
        (["list", "--older-than", "soon"], "'soon' is not an age"),
        (["list", "--limit", "0"], "'0' must be at least 1"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: subcommand"),
        (["explode"], "invalid choice: 'explode'"),
    ],
)
def test_bad_arguments_are_usage_errors(capsys, args: list[str], words: str) -> None:
    code, err = from_command_line(capsys, *args)
    assert code == 2
    assert words in err
    with pytest.raises(CommandError):  # the same refusal when called from code
        call_command("tasks", *args)


# show ------------------------------------------------------------------------------


def test_show_prints_the_task_every_attempt_and_the_tracebacks() -> None:
    task = make(Status.DEAD, attempts=2, payload={"image": "cat.png"})
    text = tasks("show", str(task.id))
    assert f"id  {task.id}" in text
    assert "status  dead" in text
    assert "attempt  2/3" in text
    assert '{"image": "cat.png"}' in text
    attempt_rows = [line for line in text.splitlines() if "failed" in line]
    assert len(attempt_rows) == 2
    assert text.count("attempt 1 traceback:") == 1
    assert text.count('File "jobs.py", line 7') == 2


def test_show_json_has_the_attempts() -> None:
    task = make(Status.DEAD, attempts=2)
    data = tasks_json("show", str(task.id))
    assert data["id"] == str(task.id)
    assert [a["number"] for a in data["attempts"]] == [1, 2]
    assert [a["decision"] for a in data["attempts"]] == ["retry", "give_up"]
    assert all("ConnectionError: refused" in a["traceback"] for a in data["attempts"])


@pytest.mark.parametrize(
    ("task_id", "words"),
    [
        (str(uuid.uuid4()), "no task with id"),
        ("not-an-id", "'not-an-id' is not a task id"),
    ],
)
def test_show_unknown_ids_fail_clearly(capsys, task_id: str, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        tasks("show", task_id)
    code, err = from_command_line(capsys, "show", task_id)
    assert code == 1
    assert words in err


# retry -----------------------------------------------------------------------------


def test_retry_by_id_redrives_a_dead_task() -> None:
    task = make(Status.DEAD)
    text = tasks("retry", str(task.id))
    assert str(task.id) in text and "queued" in text
    fresh = TaskRecord.objects.get(pk=task.pk)
    assert (fresh.status, fresh.drive_offset, fresh.max_attempts) == ("queued", 1, 4)


def test_retry_refuses_running_succeeded_and_unknown_tasks(capsys) -> None:
    dead, done = make(Status.DEAD), make(Status.SUCCEEDED)
    missing = str(uuid.uuid4())

    with pytest.raises(CommandError) as err:
        tasks("retry", str(dead.id), str(done.id), missing)
    assert "2 task(s) refused" in str(err.value)
    assert "succeeded; it cannot be retried now" in str(err.value)
    assert f"no task with id {missing}" in str(err.value)
    assert status_of(dead) == Status.QUEUED  # the good one still went through

    running = make(Status.RUNNING)
    code, err_text = from_command_line(capsys, "retry", str(running.id))
    assert code == 1 and "is running" in err_text


def test_retry_dead_retries_every_dead_task_that_matches() -> None:
    mail = [make(Status.DEAD, channel="mail") for _ in range(2)]
    thumb = make(Status.DEAD, channel="thumbs")
    waiting = make(Status.RETRYING, channel="mail")

    assert tasks("retry", "--dead", "--channel", "mail", "--dry-run").strip() == (
        "would retry 2 task(s)"
    )
    assert [status_of(t) for t in mail] == ["dead", "dead"]

    data = tasks_json("retry", "--dead", "--channel", "mail")
    assert {t["id"] for t in data["retried"]} == {str(t.id) for t in mail}
    assert [status_of(t) for t in mail] == ["queued", "queued"]
    assert status_of(thumb) == Status.DEAD
    assert status_of(waiting) == Status.RETRYING


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["retry"], "give task ids, or --dead"),
        (["retry", "--dead", "some-id"], "give task ids, or --dead"),
        (["retry", "some-id", "--channel", "mail"], "use them with --dead"),
    ],
)
def test_retry_needs_ids_or_dead_but_not_both(args: list[str], words: str) -> None:
    with pytest.raises(CommandError, match=words):
        tasks(*args)


# cancel ----------------------------------------------------------------------------


def test_cancel_unfinished_tasks_with_a_reason() -> None:
    queued, waiting = make(Status.QUEUED), make(Status.RETRYING)
    tasks("cancel", str(queued.id), str(waiting.id), "--reason", "customer left")
    for task in (queued, waiting):
        fresh = TaskRecord.objects.get(pk=task.pk)
        assert (fresh.status, fresh.reason) == ("cancelled", "customer left")


def test_cancel_refuses_finished_and_unknown_tasks(capsys) -> None:
    done = make(Status.SUCCEEDED)
    with pytest.raises(CommandError, match="already succeeded; nothing to cancel"):
        tasks("cancel", str(done.id))
    assert status_of(done) == Status.SUCCEEDED
    code, err = from_command_line(capsys, "cancel", "nope")
    assert code == 1 and "'nope' is not a task id" in err
    code, err = from_command_line(capsys, "cancel")
    assert code == 2 and "required: task_id" in err


# purge -----------------------------------------------------------------------------


def test_purge_deletes_old_finished_records_of_the_given_statuses() -> None:
    old_ok = make(Status.SUCCEEDED, finished_ago=40 * DAY)
    old_dead = make(Status.DEAD, finished_ago=40 * DAY, attempts=2)
    old_cancelled = make(Status.CANCELLED, finished_ago=40 * DAY)
    new_dead = make(Status.DEAD, finished_ago=DAY)
    ancient_queue = make(Status.QUEUED, created_ago=400 * DAY)

    assert tasks_json(
        "purge", "--status", "dead", "--older-than", "30d", "--dry-run"
    ) == {
        "dry_run": True,
        "deleted": {"dead": 1},
    }
    assert TaskRecord.objects.count() == 5

    text = tasks(
        "purge", "--status", "dead", "--status", "succeeded", "--older-than", "4w"
    )
    assert text.splitlines()[0].split() == ["status", "older", "than", "deleted"]
    assert {tuple(line.split()) for line in text.splitlines()[1:]} == {
        ("dead", "28d", "1"),
        ("succeeded", "28d", "1"),
    }
    left = set(TaskRecord.objects.values_list("pk", flat=True))
    assert left == {old_cancelled.pk, new_dead.pk, ancient_queue.pk}
    assert not AttemptRecord.objects.filter(
        task_id__in=[old_ok.pk, old_dead.pk]
    ).exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["purge", "--older-than", "30d"], "required: --status"),
        (["purge", "--status", "dead"], "required: --older-than"),
        (["purge", "--status", "running", "--older-than", "1d"], "invalid choice"),
        (["purge", "--status", "dead", "--older-than=-1d"], "is not an age"),
        (
            ["purge", "--status", "dead", "--older-than", "1d", "--batch-size", "x"],
            "whole number",
        ),
    ],
)
def test_purge_bad_arguments(capsys, args: list[str], words: str) -> None:
    make(Status.DEAD, finished_ago=40 * DAY)
    code, err = from_command_line(capsys, *args)
    assert code == 2 and words in err
    assert TaskRecord.objects.count() == 1


# backlog and workers ---------------------------------------------------------------


def test_backlog_per_channel_and_status() -> None:
    for _ in range(2):
        make(Status.QUEUED, channel="mail")
    make(Status.RETRYING, channel="mail")
    make(Status.DEAD, channel="mail")
    make(Status.RUNNING, channel="thumbs")
    late = make(Status.QUEUED, channel="thumbs")
    TaskRecord.objects.filter(pk=late.pk).update(
        due_at=timezone.now() - timedelta(minutes=5)
    )

    data = {entry["channel"]: entry for entry in tasks_json("backlog")}
    assert data["mail"]["counts"] == {
        "queued": 2, "running": 0, "retrying": 1,
        "succeeded": 0, "dead": 1, "cancelled": 0,
    }  # fmt: skip
    assert (data["mail"]["waiting"], data["mail"]["overdue"]) == (3, 0)
    assert data["thumbs"]["counts"]["running"] == 1
    assert data["thumbs"]["overdue"] == 1
    assert 299 <= data["thumbs"]["most_overdue_seconds"] < 400

    header, mail, thumbs = tasks("backlog").splitlines()
    assert header.split()[:7] == [
        "channel", "queued", "running", "retrying", "succeeded", "dead", "cancelled",
    ]  # fmt: skip
    assert mail.split() == ["mail", "2", "0", "1", "0", "1", "0", "0", "-"]
    assert thumbs.split() == ["thumbs", "1", "1", "0", "0", "0", "0", "1", "5m"]


def test_backlog_of_an_empty_store() -> None:
    assert tasks("backlog").strip() == "no tasks stored"
    assert tasks_json("backlog") == []


def test_workers_live_and_silent() -> None:
    worker("host-a:11", heartbeat_ago=2, running=["t1", "t2"])
    worker("host-b:22", heartbeat_ago=120, channels=["mail", "thumbs"])

    data = {w["id"]: w for w in tasks_json("workers")}
    assert data["host-a:11"]["live"] is True
    assert data["host-a:11"]["running"] == ["t1", "t2"]
    assert data["host-b:22"]["live"] is False
    assert [w["id"] for w in tasks_json("workers", "--live")] == ["host-a:11"]

    header, a, b = tasks("workers").splitlines()
    assert header.split() == [
        "worker", "state", "channels", "running", "heartbeat", "started",
    ]  # fmt: skip
    assert a.split()[:4] == ["host-a:11", "live", "examples", "2/4"]
    assert b.split()[:5] == ["host-b:22", "silent", "mail,thumbs", "0/4", "2m"]
    assert len(tasks("workers", "--live").splitlines()) == 2


def test_workers_when_none_are_registered() -> None:
    assert tasks("workers").strip() == "no workers registered"


# helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000),
     ("2w", 1209600), ("1.5h", 5400)],
)  # fmt: skip
def test_parse_age(text: str, seconds: int) -> None:
    assert parse_age(text).total_seconds() == seconds


def test_table_aligns_numbers_right() -> None:
    assert table(["name", "n"], [["a", 5], ["bbb", 123]]).splitlines() == [
        "name    n",
        "a       5",
        "bbb   123",
    ]


def test_limits_lists_each_declared_limit_with_running_and_waiting(
    settings: Any,
) -> None:
    settings.ASGI_APPLICATION = "tests.e2e.fault_app.application"
    make("running", channel="fault-a", type="fault.limited")
    make("queued", channel="fault-a", type="fault.limited")
    make("queued", channel="fault-a", type="fault.limited")
    make("running", channel="fault-a", type="fault.sleep")
    found = {(row["channel"], row["type"]): row for row in tasks_json("limits")}
    assert found[("fault-a", "fault.limited")] == {
        "channel": "fault-a",
        "type": "fault.limited",
        "max_running": 5,
        "rate_limit": None,
        "running": 1,
        "waiting": 2,
    }
    assert found[("fault-a", "fault.paced")]["rate_limit"] == "5/s"
    assert ("fault-a", "fault.sleep") not in found, "no limit declared"
    text = tasks("limits")
    assert "fault.limited" in text and "5/s" in text


def test_limits_when_no_consumer_declares_one(settings: Any) -> None:
    assert tasks("limits").strip() == "no consumer declares a limit"
