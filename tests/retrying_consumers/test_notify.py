"""Dead-task notifications: one mail at once, then one summary per interval."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.core import mail

from retrying_consumers import notify, signals
from retrying_consumers.conf import library_settings
from retrying_consumers.exceptions import ConfigurationError
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.notify import DeadTaskNotifier, Death, summarize
from retrying_consumers.policy import Action, Decision

GIVE_UP = Decision(Action.GIVE_UP, None, "attempts exhausted (3 of 3)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, subject: str, body: str) -> None:
        self.sent.append((subject, body))


def dead_task(channel: str = "mail", type: str = "mail.send") -> TaskRecord:
    return TaskRecord(
        id=uuid.uuid4(),
        channel=channel,
        type=type,
        status=Status.DEAD,
        attempt=3,
        max_attempts=3,
        error_class="SMTPError",
        error_message="mailbox full",
        reason="attempts exhausted (3 of 3)",
    )


def death(channel: str = "mail", type: str = "mail.send") -> Death:
    return Death.of(dead_task(channel, type), None)


@pytest.fixture(autouse=True)
def _fresh_notifier() -> Iterator[None]:
    notify._notifier = None
    yield
    notify._notifier = None


async def test_first_death_is_sent_at_once_then_a_burst_makes_one_summary() -> None:
    clock, outbox = FakeClock(), Outbox()
    notifier = DeadTaskNotifier(interval=300, send=outbox, clock=clock)

    await notifier.anotify(death())
    assert len(outbox.sent) == 1
    assert outbox.sent[0][0] == "1 task dead on mail"

    for i in range(999):
        await notifier.anotify(death(channel=f"ch{i % 3}"))
    assert len(outbox.sent) == 1  # held back: one summary follows
    assert notifier.scheduled and len(notifier.pending) == 999
    assert notifier.wait() == 300

    clock.now += 299
    assert notifier.take() == []
    clock.now += 1
    notifier.scheduled = False  # what the timer does before it flushes
    await notifier._aflush()

    assert len(outbox.sent) == 2
    subject, body = outbox.sent[1]
    assert subject == "999 tasks dead on ch0, ch1, ch2"
    assert "  999  mail.send  SMTPError" in body
    assert "... and 979 more" in body
    assert notifier.pending == []


async def test_a_late_death_is_sent_at_once_again() -> None:
    clock, outbox = FakeClock(), Outbox()
    notifier = DeadTaskNotifier(interval=300, send=outbox, clock=clock)
    await notifier.anotify(death())
    clock.now += 301
    await notifier.anotify(death())
    assert len(outbox.sent) == 2
    assert not notifier.scheduled


async def test_a_failing_send_is_logged_and_forgotten(caplog) -> None:
    def broken(subject: str, body: str) -> None:
        raise OSError("mail server down")

    notifier = DeadTaskNotifier(interval=300, send=broken, clock=FakeClock())
    await notifier.anotify(death())
    assert notifier.pending == []
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.notify"]
    assert record.levelname == "ERROR"
    assert record.exc_info is not None and "mail server down" in str(record.exc_info[1])


def test_summary_lists_each_task_with_its_error() -> None:
    task = dead_task()
    subject, body = summarize([Death.of(task, ConnectionError("refused"))])
    assert subject == "1 task dead on mail"
    assert str(task.id) in body
    assert "attempt=3/3 error=ConnectionError: refused" in body
    assert "manage.py tasks retry <id>" in body


async def test_the_dead_signal_mails_the_admins_when_enabled(settings) -> None:
    settings.ADMINS = ["ops@example.com"]
    settings.RETRYING_CONSUMERS = {"NOTIFY_DEAD": True, "NOTIFY_INTERVAL": 600}
    task = dead_task()

    await signals.task_dead.asend(
        sender=object, task=task, error=TimeoutError("too slow"), decision=GIVE_UP
    )
    await signals.task_dead.asend(
        sender=object, task=dead_task(), error=None, decision=GIVE_UP
    )

    assert len(mail.outbox) == 1  # the second one waits for the summary
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"]
    assert "1 task dead on mail" in message.subject
    assert f"{task.id}" in message.body and "TimeoutError: too slow" in message.body
    assert notify.notifier().interval == 600
    assert len(notify.notifier().pending) == 1


async def test_no_mail_unless_enabled(settings) -> None:
    settings.ADMINS = ["ops@example.com"]
    settings.RETRYING_CONSUMERS = {}
    await signals.task_dead.asend(
        sender=object, task=dead_task(), error=None, decision=GIVE_UP
    )
    assert mail.outbox == []
    assert notify._notifier is None


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"NOTIFY_DEAD": "yes"}, "'NOTIFY_DEAD'] must be True or False"),
        ({"NOTIFY_INTERVAL": 0}, "'NOTIFY_INTERVAL'] must be > 0"),
    ],
)
def test_notify_settings_are_validated(settings, options, words) -> None:
    settings.RETRYING_CONSUMERS = options
    with pytest.raises(ConfigurationError) as err:
        library_settings()
    assert words in str(err.value)
