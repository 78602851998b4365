"""What follows a stored outcome: logs, live events, the next ring, hooks, signals.

Shared by the consumers that ran the attempt and by the scheduler that finds an
attempt whose worker was lost.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from .. import signals
from ..core.policy import Action, Decision
from ..live.events import apublish, publish
from ..models import TaskRecord
from .logs import log_failure
from .scheduling import schedule_ring

logger = logging.getLogger("retrying_consumers.consumers")


async def announce_failure(
    sender: type,
    task: TaskRecord,
    error: BaseException,
    decision: Decision,
    hooks: Any = None,
) -> None:
    """Log, publish, schedule the retry, call ``hooks``' methods, send signals."""
    log_failure(task, error, decision)
    await apublish(task)
    kwargs = {"task": task, "error": error, "decision": decision}
    if decision.action is Action.RETRY:
        schedule_ring(task)
        if hooks is not None:
            await call_hook(hooks.on_retry, task, error, decision)
        await send_signal(signals.task_retrying, sender, **kwargs)
    elif decision.action is Action.GIVE_UP:
        if hooks is not None:
            await call_hook(hooks.on_give_up, task, error, decision)
        await send_signal(signals.task_dead, sender, **kwargs)
    else:
        await send_signal(signals.task_discarded, sender, **kwargs)


async def announce_success(sender: type, task: TaskRecord, result: Any) -> None:
    """Publish the finished task and send ``task_succeeded``."""
    logger.debug(
        "task succeeded: task_id=%s attempt=%s",
        task.id,
        task.attempt,
        extra={"task_id": str(task.id)},
    )
    publish(task)  # not awaited: the worker's slot is free at once
    await send_signal(signals.task_succeeded, sender, task=task, result=result)


async def call_hook(hook: Callable[..., Any], *args: Any) -> None:
    """Call a sync or async hook; log what it raises and carry on."""
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(*args)
        else:
            await database_sync_to_async(hook)(*args)
    except asyncio.CancelledError:
        raise
    except BaseException:  # SystemExit from a hook stops nothing either
        logger.exception("hook %s raised; the task is unaffected", hook.__qualname__)


async def send_signal(signal: Any, sender: type, **kwargs: Any) -> None:
    """Send a signal to every receiver; log the ones that raise."""
    try:
        responses = await signal.asend_robust(sender, **kwargs)
    except asyncio.CancelledError:
        raise
    except BaseException:  # asend_robust lets a receiver's SystemExit through
        logger.exception("a %r receiver raised; the task is unaffected", signal)
        return
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                "signal receiver %r raised; the task is unaffected",
                receiver,
                exc_info=response,
            )
