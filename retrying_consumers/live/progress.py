"""Progress reported from inside a handler, coalesced on its way out.

A handler may report thousands of times a second; the store and the channel layer
see at most one update per ``progress_interval`` per task, always the latest, and
the last one is written before the attempt's outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
from contextvars import ContextVar
from dataclasses import dataclass

from ..models import TaskRecord
from ..storage import store
from ..storage.health import is_outage, store_health
from .events import apublish

logger = logging.getLogger("retrying_consumers.progress")


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report: ``current`` of ``total`` (if known), and a message."""

    current: float
    total: float | None
    message: str


def make_progress(current: float, total: float | None, message: str) -> Progress:
    """Validate a report; raise ``ValueError`` naming the bad argument."""
    for name, value in (("current", current), ("total", total)):
        if value is None and name == "total":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"progress {name} must be a finite number, got {value!r}")
    if not isinstance(message, str):
        raise ValueError(f"progress message must be str, got {type(message).__name__}")
    return Progress(float(current), None if total is None else float(total), message)


class ProgressReporter:
    """Coalesces the progress of one running attempt. Thread-safe ``update``."""

    def __init__(self, task: TaskRecord, interval: float) -> None:
        self.task = task
        self.interval = interval
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # Flushes run in the loop's context, not in that of the thread that
        # reported: asgiref would take a sync handler's context for a deadlock.
        self._context = contextvars.copy_context()
        self._latest: Progress | None = None
        self._last_flush = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._closed = False

    def update(self, progress: Progress) -> None:
        """Record the latest progress; it is sent within ``interval``."""
        self._latest = progress
        if threading.get_ident() == self._loop_thread:
            self._schedule()
        else:
            self._loop.call_soon_threadsafe(self._schedule, context=self._context)

    def _schedule(self) -> None:
        if self._closed or self._timer is not None or self._flushing is not None:
            return
        delay = max(0.0, self._last_flush + self.interval - self._loop.time())
        self._timer = self._loop.call_later(
            delay, self._start_flush, context=self._context
        )

    def _start_flush(self) -> None:
        self._timer = None
        self._flushing = self._loop.create_task(self._flush(), context=self._context)

    async def _flush(self) -> None:
        try:
            progress, self._latest = self._latest, None
            if progress is not None:
                await self._write(progress)
        except Exception as err:
            if is_outage(err):  # said once for the whole outage
                store_health.failed("save progress", err)
            else:
                logger.warning(
                    "progress not saved: task_id=%s", self.task.id, exc_info=True
                )
        finally:
            self._last_flush = self._loop.time()
            self._flushing = None
        if self._latest is not None:
            self._schedule()

    async def _write(self, progress: Progress) -> None:
        task = self.task
        task.progress_current = progress.current
        task.progress_total = progress.total
        task.progress_message = progress.message[:500]
        if await store.asave_progress(
            task.id, progress.current, progress.total, progress.message
        ):
            await apublish(task)

    async def close(self) -> None:
        """Write what is pending, then stop; called when the attempt ends."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await self._flushing
        if self._latest is not None:
            await self._flush()


current_reporter: ContextVar[ProgressReporter | None] = ContextVar(
    "retrying_consumers_progress", default=None
)


def report_progress(
    current: float, total: float | None = None, message: str = ""
) -> None:
    """Report the progress of the task running in this context.

    Works from sync and async handlers, and from plain functions they call; it
    never blocks. Outside a task it does nothing, so those functions stay usable
    in tests and scripts.
    """
    progress = make_progress(current, total, message)
    reporter = current_reporter.get()
    if reporter is not None:
        reporter.update(progress)
