"""``RetryMixin``: attempts, backoff, dead-lettering and progress for any consumer.

Mix it in first::

    class ThumbnailConsumer(RetryMixin, AsyncConsumer):
        retry_policy = RetryPolicy(max_attempts=5)

        async def thumbnail_generate(self, message):
            image_id = message["payload"]["image_id"]
            ...

Messages rung by :func:`~retrying_consumers.enqueue` on a worker channel run as
durable tasks: claimed in the store, run under a lease and a time limit, and on
failure retried later (holding no worker), dead-lettered or discarded by the
policy. Every other message (websocket events, plain channel-layer sends) gets
short in-place retries, then a failure log, and an error frame for websockets.
No exception escapes to kill the consumer; ``StopConsumer`` and cancellation pass.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from channels.consumer import AsyncConsumer
from channels.db import aclose_old_connections, database_sync_to_async
from channels.exceptions import StopConsumer
from tenacity import wait_exponential

from . import signals, store
from .conf import library_settings, worker_id
from .events import apublish
from .exceptions import (
    AttemptTimedOut,
    ConfigurationError,
    InvalidPayload,
    TaskNotFound,
)
from .logs import log_failure
from .models import Outcome, TaskRecord
from .payload import validate_payload
from .policy import PROGRAMMING_ERRORS, Action, AttemptState, Decision, RetryPolicy
from .progress import ProgressReporter, current_reporter, make_progress
from .scheduling import schedule_ring

logger = logging.getLogger("retrying_consumers.consumers")

#: Quick retries for websocket and plain messages: 50 ms, 100 ms, then give up.
#: Bad input and programming errors are not worth a second try.
IN_PLACE_POLICY = RetryPolicy(
    max_attempts=3,
    wait=wait_exponential(multiplier=0.05, max=0.4),
    give_up_on=(*PROGRAMMING_ERRORS, ValueError, LookupError),
    time_limit=None,
    honour_retry_after=False,
)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task a handler is running, as ``self.task`` inside the handler."""

    id: str
    channel: str
    type: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]


_current_task: ContextVar[TaskContext | None] = ContextVar(
    "retrying_consumers_task", default=None
)


class NoHandler(Exception):
    """A task's message type has no handler method on the consumer."""


class RetryMixin:
    """Adds retries to a Channels consumer; put it first among the bases.

    Class attributes:

    ``retry_policy``
        The :class:`RetryPolicy` of the consumer's tasks.
    ``retry_policies``
        Per message type overrides, e.g. ``{"thumbnail.generate": RetryPolicy(...)}``.
    ``in_place_policy``
        Policy of the quick in-place retries of websocket and plain messages;
        they stop once ``RETRYING_CONSUMERS["IN_PLACE_BUDGET"]`` seconds are spent.
    ``store_results``
        Whether handler return values are stored as results (default: setting).
    """

    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    retry_policies: ClassVar[Mapping[str, RetryPolicy]] = {}
    in_place_policy: ClassVar[RetryPolicy] = IN_PLACE_POLICY
    store_results: ClassVar[bool | None] = None

    scope: dict[str, Any]
    _sync: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _validate_consumer_class(cls)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Error frames are sent through the server's own send, which works for
        # sync and async consumers alike.
        self._raw_send = send
        await super().__call__(scope, receive, send)  # type: ignore[misc]

    @property
    def task(self) -> TaskContext | None:
        """The task whose attempt is running, or None outside a task."""
        return _current_task.get()

    def get_retry_policy(self, message_type: str) -> RetryPolicy:
        """The policy of ``message_type``: retry_policies, else retry_policy."""
        return self.retry_policies.get(message_type, self.retry_policy)

    def report_progress(
        self, current: float, total: float | None = None, message: str = ""
    ) -> None:
        """Report progress of the running task; never blocks, from sync or async code.

        Stored as the task's latest progress and sent live to the page, at most
        every ``PROGRESS_INTERVAL`` seconds. Outside a task it does nothing.
        """
        progress = make_progress(current, total, message)
        reporter = current_reporter.get()
        if reporter is not None:
            reporter.update(progress)

    def on_retry(
        self, task: TaskRecord, error: BaseException, decision: Decision
    ) -> Any:
        """Called after an attempt failed and another one is scheduled.

        Receives the stored task (``task.due_at`` is the next attempt time), the
        error and the policy's decision. May be ``async def``. If it raises, the
        error is logged and the retry stays scheduled. Default: nothing.
        """

    def on_give_up(
        self, task: TaskRecord, error: BaseException, decision: Decision
    ) -> Any:
        """Called when a task has ended dead (the store is its dead-letter queue).

        Receives the stored task, the last error and the decision. May be
        ``async def``. If it raises, the error is logged; the task stays dead.
        Default: nothing more than the dead-lettering already done.
        """

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Run a task attempt, or any other message with in-place retries."""
        if self.scope.get("type") == "channel" and "task_id" in message:
            await self._run_task(message)
        else:
            await self._run_in_place(message)

    # Durable tasks --------------------------------------------------------

    async def _run_task(self, message: dict[str, Any]) -> None:
        task_id, attempt = message.get("task_id"), message.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            logger.error(
                "dead-lettered malformed task message: task_id=%s attempt=%r type=%s",
                task_id,
                attempt,
                message.get("type"),
                extra={"task_id": str(task_id), "outcome": "dead_letter"},
            )
            return
        lib = library_settings()
        policy = self.get_retry_policy(str(message.get("type")))
        try:
            task = await store.aclaim(
                str(task_id),
                attempt,
                worker=worker_id(),
                lease_seconds=lib.lease_seconds,
                default_max_attempts=policy.max_attempts,
            )
        except TaskNotFound as err:
            logger.error(
                "dead-lettered message for unknown task: %s type=%s",
                err,
                message.get("type"),
                extra={"task_id": str(task_id), "outcome": "dead_letter"},
            )
            return
        if task is None:
            logger.debug(
                "duplicate or stale ring ignored: task_id=%s attempt=%s",
                task_id,
                attempt,
                extra={"task_id": str(task_id)},
            )
            return
        await self._attempt(task, policy)

    async def _attempt(self, task: TaskRecord, policy: RetryPolicy) -> None:
        lib = library_settings()
        me = worker_id()
        logger.debug(
            "attempt started: task_id=%s channel=%s type=%s attempt=%s/%s",
            task.id,
            task.channel,
            task.type,
            task.attempt,
            task.max_attempts,
            extra={"task_id": str(task.id)},
        )
        await apublish(task)
        await _send_signal(
            signals.task_started, type(self), task=task, attempt=task.attempt
        )
        reporter = ProgressReporter(task, lib.progress_interval)
        context = TaskContext(
            str(task.id),
            task.channel,
            task.type,
            task.attempt,
            task.max_attempts or policy.max_attempts,
            task.payload,
        )
        heartbeat = asyncio.create_task(self._heartbeat(task, me, lib.lease_seconds))
        task_token = _current_task.set(context)
        progress_token = current_reporter.set(reporter)
        try:
            result = await self._run_handler(task, policy)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception as err:
            await reporter.close()
            await self._record_failure(task, err, policy)
            return
        finally:
            heartbeat.cancel()
            _current_task.reset(task_token)
            current_reporter.reset(progress_token)
        await reporter.close()
        await self._record_success(task, result)

    async def _run_handler(self, task: TaskRecord, policy: RetryPolicy) -> Any:
        handler = getattr(self, task.type.replace(".", "_"), None)
        if handler is None or task.type.startswith("_"):
            raise NoHandler(
                f"{type(self).__qualname__} has no handler for {task.type!r}"
            )
        message = {
            "type": task.type,
            "task_id": str(task.id),
            "attempt": task.attempt,
            "max_attempts": task.max_attempts,
            "payload": task.payload,
        }
        limit = policy.time_limit
        if self._sync:
            started = time.monotonic()
            result = await database_sync_to_async(handler)(message)
            if limit is not None and time.monotonic() - started > limit:
                # A thread cannot be stopped; its late result is not trusted.
                raise AttemptTimedOut(f"attempt ran past its time limit of {limit:g} s")
            return result
        await aclose_old_connections()
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                return await handler(message)
        except TimeoutError:
            if timeout.expired():
                raise AttemptTimedOut(
                    f"attempt was cancelled at its time limit of {limit:g} s"
                ) from None
            raise

    async def _heartbeat(self, task: TaskRecord, me: str, lease_seconds: float) -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                kept = await store.aextend_lease(
                    task.id, task.attempt, worker=me, lease_seconds=lease_seconds
                )
            except Exception:
                logger.warning(
                    "lease renewal failed: task_id=%s", task.id, exc_info=True
                )
                continue
            if not kept:
                logger.warning(
                    "lease lost (task cancelled or taken over): task_id=%s attempt=%s",
                    task.id,
                    task.attempt,
                    extra={"task_id": str(task.id)},
                )
                return

    async def _record_success(self, task: TaskRecord, result: Any) -> None:
        keep = self.store_results
        if keep is None:
            keep = library_settings().store_results
        stored = _storable_result(task, result) if keep else None
        done = await store.asucceed(
            task.id, task.attempt, worker=worker_id(), result=stored
        )
        if done is None:
            logger.warning(
                "outcome not recorded, the task was cancelled or its lease lost: "
                "task_id=%s attempt=%s",
                task.id,
                task.attempt,
                extra={"task_id": str(task.id)},
            )
            return
        logger.debug(
            "task succeeded: task_id=%s attempt=%s",
            task.id,
            task.attempt,
            extra={"task_id": str(task.id)},
        )
        await apublish(done)
        await _send_signal(signals.task_succeeded, type(self), task=done, result=stored)

    async def _record_failure(
        self, task: TaskRecord, error: Exception, policy: RetryPolicy
    ) -> None:
        failure = store.Failure(
            outcome=str(
                Outcome.TIMED_OUT
                if isinstance(error, AttemptTimedOut)
                else Outcome.FAILED
            ),
            error_class=type(error).__qualname__,
            error_message=str(error),
            traceback="".join(traceback.format_exception(error)),
        )
        if isinstance(error, NoHandler):
            decision = Decision(Action.GIVE_UP, None, str(error))
        else:
            decision = _task_policy(policy, task).decide(
                error, store.attempt_state(task, datetime.now(UTC))
            )
        done = await store.afail(
            task.id,
            task.attempt,
            worker=worker_id(),
            failure=failure,
            decision=decision,
        )
        if done is None:
            logger.warning(
                "failure not recorded, the task was cancelled or its lease lost: "
                "task_id=%s attempt=%s error=%s",
                task.id,
                task.attempt,
                failure.error_class,
                extra={"task_id": str(task.id)},
            )
            return
        await self.after_failure(done, error, decision)

    async def after_failure(
        self, task: TaskRecord, error: BaseException, decision: Decision
    ) -> None:
        """Log, schedule, call hooks and send signals for a stored failure."""
        log_failure(task, error, decision)
        await apublish(task)
        sender = type(self)
        if decision.action is Action.RETRY:
            schedule_ring(task)
            await _call_hook(self.on_retry, task, error, decision)
            await _send_signal(
                signals.task_retrying, sender, task=task, error=error, decision=decision
            )
        elif decision.action is Action.GIVE_UP:
            await _call_hook(self.on_give_up, task, error, decision)
            await _send_signal(
                signals.task_dead, sender, task=task, error=error, decision=decision
            )
        else:
            await _send_signal(
                signals.task_discarded,
                sender,
                task=task,
                error=error,
                decision=decision,
            )

    # Websocket and plain messages ------------------------------------------

    async def _run_in_place(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        handler_name = kind.replace(".", "_") if isinstance(kind, str) else ""
        handler = getattr(self, handler_name, None) if handler_name else None
        if handler is None or handler_name.startswith("_"):
            logger.error(
                "dead-lettered message with no handler: consumer=%s type=%r",
                type(self).__qualname__,
                kind,
                extra={"outcome": "dead_letter"},
            )
            await self._report_failure(
                message, "no_handler", f"No handler for {kind!r}."
            )
            return
        lib = library_settings()
        started, first_started_at = time.monotonic(), datetime.now(UTC)
        attempt = 1
        while True:
            try:
                await self._call(handler, message)
                return
            except (StopConsumer, asyncio.CancelledError):
                raise
            except Exception as err:
                decision = self.in_place_policy.decide(
                    err, AttemptState(attempt, first_started_at, datetime.now(UTC))
                )
                spent = time.monotonic() - started
                if (
                    decision.retry
                    and spent + (decision.delay or 0) <= lib.in_place_budget
                ):
                    logger.info(
                        "handler failed, retrying in place: consumer=%s type=%s "
                        "attempt=%s error=%s: %s",
                        type(self).__qualname__,
                        kind,
                        attempt,
                        type(err).__qualname__,
                        err,
                    )
                    await asyncio.sleep(decision.delay or 0)
                    attempt += 1
                    continue
                logger.error(
                    "handler failed: consumer=%s type=%s attempt=%s error=%s: %s "
                    "gave_up=%s",
                    type(self).__qualname__,
                    kind,
                    attempt,
                    type(err).__qualname__,
                    err,
                    decision.reason,
                    exc_info=err,
                    extra={"error_class": type(err).__qualname__, "outcome": "give_up"},
                )
                await self._report_failure(
                    message,
                    "handler_failed",
                    f"The server could not handle this message "
                    f"({type(err).__name__}); the error has been logged.",
                )
                return

    async def _call(self, handler: Callable[..., Any], message: dict[str, Any]) -> None:
        if self._sync:
            await database_sync_to_async(handler)(message)
        else:
            await aclose_old_connections()
            await handler(message)

    async def _report_failure(
        self, message: dict[str, Any], code: str, detail: str
    ) -> None:
        if self.scope.get("type") != "websocket":
            return
        kind = message.get("type")
        if kind == "websocket.connect":
            await self._raw_send({"type": "websocket.close"})
        elif kind == "websocket.disconnect":
            raise StopConsumer()
        else:
            frame = json.dumps({"type": "error", "code": code, "detail": detail})
            await self._raw_send({"type": "websocket.send", "text": frame})


def _task_policy(policy: RetryPolicy, task: TaskRecord) -> RetryPolicy:
    """The policy with the task's own cap on attempts (set at enqueue or re-drive)."""
    allowed = (task.max_attempts or 0) - task.drive_offset
    if allowed >= 1 and allowed != policy.max_attempts:
        return policy.with_options(max_attempts=allowed)
    return policy


def _storable_result(task: TaskRecord, result: Any) -> Any:
    try:
        validate_payload({"result": result}, "result")
    except InvalidPayload as err:
        logger.warning(
            "result not stored, it is not JSON safe: task_id=%s %s",
            task.id,
            err,
            extra={"task_id": str(task.id)},
        )
        return None
    return result


async def _call_hook(hook: Callable[..., Any], *args: Any) -> None:
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(*args)
        else:
            await database_sync_to_async(hook)(*args)
    except Exception:
        logger.exception("hook %s raised; the task is unaffected", hook.__qualname__)


async def _send_signal(signal: Any, sender: type, **kwargs: Any) -> None:
    for receiver, response in await signal.asend_robust(sender, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "signal receiver %r raised; the task is unaffected",
                receiver,
                exc_info=response,
            )


def _validate_consumer_class(cls: type) -> None:
    name = cls.__qualname__
    if issubclass(cls, AsyncConsumer):
        mro = cls.__mro__
        if mro.index(RetryMixin) > mro.index(AsyncConsumer):
            raise ConfigurationError(
                f"{name}: put RetryMixin before the Channels consumer in the bases"
            )
    for attr in ("retry_policy", "in_place_policy"):
        if not isinstance(getattr(cls, attr), RetryPolicy):
            raise ConfigurationError(f"{name}.{attr} must be a RetryPolicy")
    policies = cls.retry_policies  # type: ignore[attr-defined]
    if not isinstance(policies, Mapping):
        raise ConfigurationError(f"{name}.retry_policies must be a dict")
    for message_type, policy in policies.items():
        if not isinstance(policy, RetryPolicy):
            raise ConfigurationError(
                f"{name}.retry_policies[{message_type!r}] must be a RetryPolicy"
            )
        handler = (
            message_type.replace(".", "_") if isinstance(message_type, str) else ""
        )
        if (
            not handler
            or handler.startswith("_")
            or not callable(getattr(cls, handler, None))
        ):
            raise ConfigurationError(
                f"{name}.retry_policies[{message_type!r}]: the consumer has no "
                f"handler method {handler or message_type!r}"
            )
