"""Telling people when tasks end dead, without flooding their inbox.

With ``RETRYING_CONSUMERS["NOTIFY_DEAD"] = True`` every worker process mails the
site's ``ADMINS`` (Django's ``mail_admins``) when tasks end dead. Mails are rate
limited per process: the first death is mailed at once, and the deaths that
follow within ``NOTIFY_INTERVAL`` seconds are gathered into one summary sent
when the interval is over. A burst of a thousand deaths is two mails, not a
thousand.

For another channel (chat, paging), connect your own receiver to
:data:`retrying_consumers.signals.task_dead`, or build a
:class:`DeadTaskNotifier` with your own ``send`` function.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.core.mail import mail_admins

from ..core.conf import library_settings
from ..models import TaskRecord

logger = logging.getLogger("retrying_consumers.notify")

#: Deaths listed one by one in a summary; the rest are only counted.
MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Death:
    """What a summary says about one dead task."""

    task_id: str
    channel: str
    type: str
    attempt: int
    max_attempts: int | None
    error: str
    reason: str

    @classmethod
    def of(cls, task: TaskRecord, error: BaseException | None) -> Death:
        """The death of ``task``, from the stored record and the last error."""
        if error is not None:
            text = f"{type(error).__qualname__}: {error}"
        else:
            text = f"{task.error_class}: {task.error_message}"
        return cls(
            task_id=str(task.id),
            channel=task.channel,
            type=task.type,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            error=text[:300],
            reason=task.reason,
        )


def summarize(deaths: list[Death]) -> tuple[str, str]:
    """Subject and body of one mail about ``deaths`` (at least one)."""
    channels = sorted({d.channel for d in deaths})
    noun = "task" if len(deaths) == 1 else "tasks"
    subject = f"{len(deaths)} {noun} dead on {', '.join(channels)}"
    lines = [f"{len(deaths)} {noun} ended dead.", "", "By type and error:"]
    by_kind = Counter((d.type, d.error.split(":", 1)[0]) for d in deaths)
    for (task_type, error_class), count in by_kind.most_common():
        lines.append(f"  {count:>5}  {task_type}  {error_class}")
    lines += ["", "Tasks:"]
    for d in deaths[:MAX_LISTED]:
        lines.append(
            f"  {d.task_id}  channel={d.channel} type={d.type} "
            f"attempt={d.attempt}/{d.max_attempts or '?'} error={d.error}"
        )
    if len(deaths) > MAX_LISTED:
        lines.append(f"  ... and {len(deaths) - MAX_LISTED} more")
    lines += [
        "",
        "Inspect with `manage.py tasks list --status dead` or the admin; "
        "retry with `manage.py tasks retry <id>`.",
    ]
    return subject, "\n".join(lines)


def send_mail_to_admins(subject: str, body: str) -> None:
    """Default ``send``: Django's ``mail_admins`` (does nothing without ADMINS)."""
    mail_admins(subject, body, fail_silently=False)


@dataclass
class DeadTaskNotifier:
    """Gathers deaths and sends at most one summary per ``interval`` seconds.

    State changes only in the event loop's thread; ``send`` (blocking SMTP) runs
    in a worker thread.
    """

    interval: float
    send: Callable[[str, str], None] = send_mail_to_admins
    clock: Callable[[], float] = time.monotonic
    pending: list[Death] = field(default_factory=list)
    last_sent: float | None = None
    scheduled: bool = False

    def wait(self) -> float:
        """Seconds until the next summary may be sent (0: now)."""
        if self.last_sent is None:
            return 0.0
        return max(0.0, self.last_sent + self.interval - self.clock())

    def take(self) -> list[Death]:
        """The pending deaths if a summary may go now (they stop being pending)."""
        if not self.pending or self.wait() > 0:
            return []
        deaths, self.pending = self.pending, []
        self.last_sent = self.clock()
        return deaths

    def deliver(self, deaths: list[Death]) -> None:
        """Send one summary of ``deaths``; log (and drop) what ``send`` raises.

        The store still holds every dead task, so a broken mail server costs a
        mail, never a task, and cannot grow this process's memory.
        """
        try:
            self.send(*summarize(deaths))
        except Exception:
            logger.exception("dead-task notification failed: count=%s", len(deaths))

    async def anotify(self, death: Death) -> None:
        """Send ``death`` now if allowed, else make sure a summary follows."""
        self.pending.append(death)
        await self._aflush()

    async def _aflush(self) -> None:
        deaths = self.take()
        if deaths:
            await sync_to_async(self.deliver, thread_sensitive=False)(deaths)
        elif self.pending and not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(self.wait(), self._due)

    def _due(self) -> None:
        self.scheduled = False
        job = asyncio.get_running_loop().create_task(self._aflush())
        _jobs.add(job)
        job.add_done_callback(_jobs.discard)


_jobs: set[asyncio.Task[None]] = set()
_notifier: DeadTaskNotifier | None = None


def notifier() -> DeadTaskNotifier:
    """This process's notifier (its interval follows ``NOTIFY_INTERVAL``)."""
    global _notifier
    interval = library_settings().notify_interval
    if _notifier is None:
        _notifier = DeadTaskNotifier(interval)
    _notifier.interval = interval
    return _notifier


async def on_task_dead(
    sender: Any,
    task: TaskRecord,
    error: BaseException | None = None,
    **kwargs: Any,
) -> None:
    """Receiver of ``task_dead``: notify when ``NOTIFY_DEAD`` is on.

    Connected by the app's ``ready()``. The library sends ``task_dead`` from
    the worker's event loop, where a summary due later is sent by a timer.
    """
    if library_settings().notify_dead:
        await notifier().anotify(Death.of(task, error))
