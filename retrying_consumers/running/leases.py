"""An attempt's lease, renewed while its handler runs.

A worker that stops renewing (lost, or its handler hung past its time limit)
lets the lease expire, and the scheduler takes the task back
(:mod:`.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..core.conf import worker_id
from ..core.policy import RetryPolicy
from ..messaging.revoking import revoke
from ..models import TaskRecord
from ..storage import store
from ..storage.health import is_outage, store_health

logger = logging.getLogger("retrying_consumers.consumers")


class Heartbeat:
    """Renew the attempt's lease every third of it, until the attempt ends, or
    until its time limit has passed.

    A handler that hangs past its limit (a thread cannot be killed) stops being
    renewed, so its lease expires and the scheduler takes the task back. The
    renewals start from a timer: most attempts end before the first one, and a
    timer costs less to set and cancel than a task.
    """

    def __init__(
        self, task: TaskRecord, lease_seconds: float, policy: RetryPolicy
    ) -> None:
        self.interval = lease_seconds / 3
        self.deadline: float | None = None
        if policy.time_limit is not None:
            self.deadline = time.monotonic() + policy.time_limit + self.interval
        self.job: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(
            self.interval, self._start, task, lease_seconds
        )

    def _start(self, task: TaskRecord, lease_seconds: float) -> None:
        self.job = asyncio.get_running_loop().create_task(
            self._renew(task, lease_seconds)
        )

    def attempt_over(self) -> None:
        """The handler has returned: renew until the outcome is written."""
        self.deadline = None

    def cancel(self) -> None:
        self.timer.cancel()
        if self.job is not None:
            self.job.cancel()

    async def _renew(self, task: TaskRecord, lease_seconds: float) -> None:
        me = worker_id()
        while True:
            try:
                kept = await store.aextend_lease(
                    task.id, task.attempt, worker=me, lease_seconds=lease_seconds
                )
            except Exception as err:
                if is_outage(err):
                    store_health.failed("renew lease", err)
                else:
                    logger.warning(
                        "lease renewal failed: task_id=%s", task.id, exc_info=True
                    )
            else:
                store_health.succeeded()
                if not kept:
                    logger.warning(
                        "lease lost (task cancelled or taken over), stopping the "
                        "attempt: task_id=%s attempt=%s",
                        task.id,
                        task.attempt,
                        extra={"task_id": str(task.id)},
                    )
                    revoke(str(task.id), "the attempt's lease was lost")
                    return
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return
            await asyncio.sleep(self.interval)
