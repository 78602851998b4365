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
import contextvars
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer

from ..core.conf import library_settings
from ..core.exceptions import ConfigurationError
from ..core.policy import Decision, RetryPolicy
from ..live.progress import current_reporter, make_progress
from ..messaging.doorbell import RINGS_TYPE, rings_in
from ..models import TaskRecord
from ..storage import store
from .attempts import run_task
from .context import TaskContext, current_task
from .handlers import handler_name, is_handler
from .inplace import IN_PLACE_POLICY, run_in_place

__all__ = ["IN_PLACE_POLICY", "RetryMixin", "TaskContext"]

logger = logging.getLogger("retrying_consumers.consumers")


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
        Whether handler return values are stored as results: ``True``, ``False``,
        or per message type, e.g. ``{"report.build": False}`` (types not listed
        follow the ``STORE_RESULTS`` setting). Default: the setting.
    ``worker_concurrency``
        The most attempts of this consumer one worker process runs at once
        (never more than its ``--concurrency``). Default: ``--concurrency`` for
        async consumers, 1 for sync ones, whose handlers all share one thread.
    """

    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    retry_policies: ClassVar[Mapping[str, RetryPolicy]] = {}
    in_place_policy: ClassVar[RetryPolicy] = IN_PLACE_POLICY
    store_results: ClassVar[bool | Mapping[str, bool] | None] = None
    worker_concurrency: ClassVar[int | None] = None

    scope: dict[str, Any]
    _sync: bool
    _message_context: contextvars.Context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _validate_consumer_class(cls)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Error frames are sent through the server's own send, which works for
        # sync and async consumers alike.
        self._raw_send = send
        # Each message starts from this context (see dispatch).
        self._message_context = contextvars.copy_context()
        await super().__call__(scope, receive, send)  # type: ignore[misc]

    @property
    def task(self) -> TaskContext | None:
        """The task whose attempt is running, or None outside a task."""
        return current_task.get()

    def stores_result(self, message_type: str) -> bool:
        """Whether the return value of ``message_type``'s handler is stored."""
        keep = self.store_results
        if isinstance(keep, Mapping):
            keep = keep.get(message_type)
        return library_settings().store_results if keep is None else keep

    def handler_type(self, message_type: str) -> str:
        """Called before the handler of a task is looked up: the type whose
        handler runs tasks of ``message_type``. By default the type itself;
        :class:`~retrying_consumers.tasks_consumer.DjangoTaskConsumer` runs
        every ``django.task.<module path>`` with ``django_task``. The handler
        still gets the task's own type in ``message["type"]``. If it raises,
        the attempt fails with that error.
        """
        return message_type

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

    def decide_retry(
        self, task: TaskRecord, error: BaseException, policy: RetryPolicy
    ) -> Decision:
        """Called after an attempt failed, to decide what follows.

        Receives the stored task, the error and the policy in force (already
        capped at the task's own ``max_attempts``). Returns the policy's decision
        by default; override it to decide per task. Runs in the event loop: do not
        block. If it raises or returns something else, that is logged at
        CRITICAL and the policy decides.
        """
        return policy.decide(error, store.attempt_state(task, datetime.now(UTC)))

    def on_retry(
        self, task: TaskRecord, error: BaseException, decision: Decision
    ) -> Any:
        """Called after an attempt failed and another one is scheduled.

        Receives the stored task (``task.due_at`` is the next attempt time), the
        error and the policy's decision. May be ``async def``. If it raises, the
        error is logged and the retry stays scheduled. Default: nothing. For a
        lost worker it is called by the scheduler, on a fresh instance.
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
        """Run a task attempt, or any other message with in-place retries.

        Each message runs in a context of its own, copied from the one the
        consumer started in: whatever one handler leaves in its context
        (asgiref's per-context flags after a ``RecursionError``, a context
        variable it set) cannot reach the next message.
        """
        context = self._message_context.copy()
        await asyncio.create_task(self._dispatch_one(message), context=context)

    async def _dispatch_one(self, message: dict[str, Any]) -> None:
        try:
            await self._route(message if isinstance(message, dict) else {})
        except (StopConsumer, asyncio.CancelledError):
            raise
        except BaseException:
            # Handlers' errors are recorded before this; only the library's
            # own machinery can fail here. An error leaving this task would
            # stop the whole event loop if it were SystemExit.
            logger.critical(
                "message handling failed: consumer=%s type=%r",
                type(self).__qualname__,
                message.get("type") if isinstance(message, dict) else None,
                exc_info=True,
            )

    async def _route(self, message: dict[str, Any]) -> None:
        if self.scope.get("type") == "channel" and message.get("type") == RINGS_TYPE:
            for ring in rings_in(message):  # a batch the worker did not split
                await run_task(self, ring if isinstance(ring, dict) else {})
        elif self.scope.get("type") == "channel" and "task_id" in message:
            await run_task(self, message)
        else:
            await run_in_place(self, message)


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
        _check_handler(cls, name, "retry_policies", message_type)
    _validate_store_results(cls, name)
    limit = cls.worker_concurrency  # type: ignore[attr-defined]
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
    ):
        raise ConfigurationError(
            f"{name}.worker_concurrency must be None or an int >= 1, got {limit!r}"
        )


def _validate_store_results(cls: type, name: str) -> None:
    keep = cls.store_results  # type: ignore[attr-defined]
    if keep is None or isinstance(keep, bool):
        return
    if not isinstance(keep, Mapping):
        raise ConfigurationError(
            f"{name}.store_results must be True, False, None or a dict of "
            "message type -> bool"
        )
    for message_type, value in keep.items():
        _check_handler(cls, name, "store_results", message_type)
        if not isinstance(value, bool):
            raise ConfigurationError(
                f"{name}.store_results[{message_type!r}] must be True or False"
            )


def _check_handler(cls: type, name: str, attr: str, message_type: object) -> None:
    handler = handler_name(message_type)
    if handler is None or not is_handler(cls, handler):
        raise ConfigurationError(
            f"{name}.{attr}[{message_type!r}]: the consumer has no "
            f"handler method {handler or message_type!r}"
        )
