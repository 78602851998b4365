"""A ``django.tasks`` backend whose tasks run on Channels workers, with retries.

::

    TASKS = {
        "default": {
            "BACKEND": "retrying_consumers.tasks_backend.ChannelsBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"MAX_ATTEMPTS": 5},
        }
    }

Each queue is a worker channel, served by
:class:`~retrying_consumers.tasks_consumer.DjangoTaskConsumer`. An enqueued task
is a :class:`~retrying_consumers.models.TaskRecord` of type
``django.task.<module path>`` whose payload holds its arguments, so it has the
guarantees, the page, the admin and the commands of every other task. Results
are read back from the record and its attempts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task
from django.tasks.exceptions import (
    InvalidTask,
    TaskResultDoesNotExist,
)
from django.tasks.signals import task_enqueued
from django.utils.module_loading import import_string

from ..core.conf import library_settings
from ..core.exceptions import InvalidArgument, InvalidPayload, TaskNotFound
from ..models import AttemptRecord, Status, TaskRecord
from ..producing import producer
from ..running.eager import arun_stored, check_not_atomic
from ..running.outcomes import send_signal
from ..storage import store
from . import taskdata
from .options import OPTIONS as OPTIONS
from .options import Backoff as Backoff
from .options import (
    backend_options,
    check_queues,
    eager_option,
    queue_problem,
    retry_problem,
    run_after_problem,
)
from .taskdata import InvalidTaskData as InvalidTaskData
from .taskdata import exception_path as exception_path
from .taskdata import json_safe as json_safe
from .taskdata import task_error as task_error

logger = logging.getLogger("retrying_consumers.django_tasks")

#: The message type of Django tasks; ``DjangoTaskConsumer.django_task`` runs them.
#: A task is stored as ``django.task.<module path>`` (see :func:`django_task_type`).
DJANGO_TASK_TYPE = "django.task"


def django_task_type(module_path: str) -> str:
    """The stored type of the task at ``module_path``, which names the function:
    ``django.task.myapp.tasks.send_welcome``, filtered on like any type. A path
    that no type can hold (not ASCII, or too long) gives ``django.task``."""
    kind = f"{DJANGO_TASK_TYPE}.{module_path}"
    return kind if producer.MESSAGE_TYPE.fullmatch(kind) else DJANGO_TASK_TYPE


def is_django_task_type(kind: str) -> bool:
    """Whether ``kind`` is the type of a Django task (``django.task[.<path>]``)."""
    return kind == DJANGO_TASK_TYPE or kind.startswith(f"{DJANGO_TASK_TYPE}.")


#: ``backoff(exception, task_result[, retry_after])``: seconds (or a timedelta)
#: before the next attempt, or None to give up. ``retry_after``, if taken, is the
#: server's Retry-After in seconds, or None.
STATUSES = {
    Status.QUEUED: TaskResultStatus.READY,
    Status.RETRYING: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.DEAD: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelsTask(Task):
    """A Django ``Task`` with retry options: ``@task(max_attempts=5, backoff=f)``.

    ``max_attempts`` is the most executions, the first included (None: the
    backend's ``MAX_ATTEMPTS``, else the consumer's policy). ``backoff`` is called
    with the exception and the failed ``TaskResult`` after an attempt that the
    policy would retry; it returns the seconds to wait, or None to give up.
    Neither can be changed with ``using()``. :meth:`owned_by` gives the tasks
    it enqueues an owner, who may watch them on the page.
    """

    max_attempts: int | None = None
    backoff: Backoff | None = None
    owner_id: Any = None

    def owned_by(self, user: Any) -> ChannelsTask:
        """A copy whose enqueued tasks belong to ``user``, as ``enqueue(user=)``.

        ``send_welcome.owned_by(request.user).enqueue(user_id=7)``: the owner
        may watch the task on the page and over the websocket. ``user`` is a
        saved user, or None or an ``AnonymousUser`` for nobody; anything else
        raises ``InvalidArgument`` here, and a user deleted since, at enqueue.
        """
        return replace(self, owner_id=producer.owner_id(user))


class ChannelsBackend(BaseTaskBackend):
    """Django tasks as durable, retried tasks on Channels worker channels.

    ``QUEUES`` are channel names (each must be routed to ``DjangoTaskConsumer``);
    empty, any channel name is a valid queue name.
    ``OPTIONS``: ``MAX_ATTEMPTS`` (default for tasks that set none) and
    ``BACKOFF`` (a callable or its dotted path: the default ``backoff``);
    ``EAGER: True`` runs each task at enqueue, in the caller, for tests (see
    :meth:`enqueue`).
    Channels has no priorities, so ``priority`` other than 0 is refused.
    """

    task_class = ChannelsTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False  # a channel is first in, first out

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        check_queues(alias, params.get("QUEUES", [DEFAULT_TASK_QUEUE_NAME]))
        super().__init__(alias, params)
        self.max_attempts, self.backoff = backend_options(alias, self.options)
        self.eager = eager_option(alias, self.options)

    def validate_task(self, task: Task) -> None:
        """Django's checks (the queue is one of QUEUES), and sane retry options."""
        # Django's own checks fail with raw errors on these.
        problem = queue_problem(task.queue_name) or run_after_problem(task.run_after)
        if problem:
            raise InvalidTask(problem)
        super().validate_task(task)
        problem = retry_problem(
            getattr(task, "max_attempts", None), getattr(task, "backoff", None)
        )
        if problem:
            raise InvalidTask(problem)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Store the task; its channel is rung when the transaction commits.

        The result is the task as stored, READY: a worker may already be running
        it by the time this returns. With ``EAGER``, the task runs here and now
        through ``DjangoTaskConsumer`` and its policy, retries without their
        waits (``run_after`` is not waited for either), and the result is its
        final state; the caller must not be in a transaction.
        """
        self.validate_task(task)
        fields = self._fields(task, args, kwargs)
        if self.eager:
            check_not_atomic()
            record = store.create_task(**fields)[0]
        else:
            record = producer.submit(fields)
        result = self._result(record, [], task)
        for receiver, response in task_enqueued.send_robust(
            type(self), task_result=result
        ):
            if isinstance(response, Exception):
                logger.error(
                    "task_enqueued receiver %r raised", receiver, exc_info=response
                )
        if self.eager:
            async_to_sync(self._arun_eagerly)(record)
            return self.get_result(result.id)
        return result

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Async twin of :meth:`enqueue` (it rings at once)."""
        self.validate_task(task)
        fields = self._fields(task, args, kwargs)
        if self.eager:
            await sync_to_async(check_not_atomic)()
            record = (await database_sync_to_async(store.create_task)(**fields))[0]
        else:
            record = await producer.asubmit(fields)
        result = self._result(record, [], task)
        await send_signal(task_enqueued, type(self), task_result=result)
        if self.eager:
            await self._arun_eagerly(record)
            return await self.aget_result(result.id)
        return result

    async def _arun_eagerly(self, record: TaskRecord) -> None:
        from .tasks_consumer import DjangoTaskConsumer  # it imports this module

        await arun_stored(DjangoTaskConsumer, record)

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as stored now, or ``TaskResultDoesNotExist``."""
        try:
            record = store.get_task(result_id)
        except TaskNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        if (
            not is_django_task_type(record.type)
            or record.payload.get("backend") != self.alias
        ):
            raise TaskResultDoesNotExist(result_id)
        attempts = list(AttemptRecord.objects.filter(task=record).order_by("number"))
        return self._result(record, attempts, self._task_of(record))

    async def aget_result(self, result_id: str) -> TaskResult:
        """Async twin of :meth:`get_result`."""
        return await database_sync_to_async(self.get_result)(result_id)

    def _fields(self, task: Task, args: Any, kwargs: Any) -> dict[str, Any]:
        """The producer's checked fields for ``task`` called with ``args``, ``kwargs``.

        Raises ``InvalidTaskData`` for arguments JSON cannot carry, or too big.
        """
        found = _import_task(task.module_path)
        if found is None or found.func is not task.func:
            raise InvalidTask(
                f"{task.module_path!r} must be the Task itself, so that workers "
                "can import it (decorate the module-level function with @task)."
            )
        limit = library_settings().max_payload_bytes
        values = {"args": list(args), "kwargs": dict(kwargs)}
        run_after = task.run_after
        payload = {
            "module_path": task.module_path,
            "backend": self.alias,
            "run_after": run_after.isoformat() if run_after else None,
            **json_safe(values, max_bytes=limit),
        }
        try:
            return producer.prepare(
                task.queue_name,
                django_task_type(task.module_path),
                payload,
                max_attempts=getattr(task, "max_attempts", None) or self.max_attempts,
                run_after=run_after,
            ) | {"owner_id": getattr(task, "owner_id", None)}
        except InvalidPayload as err:  # the whole payload is over the limit
            path = "task" + err.path.removeprefix("payload")
            raise InvalidTaskData(path, err.problem) from None
        except InvalidArgument as err:
            raise InvalidTask(str(err)) from err

    def _task_of(self, record: TaskRecord) -> Task:
        """The Task of a stored record, as it was enqueued (queue, run_after,
        owner)."""
        path = record.payload["module_path"]
        found = _import_task(path)
        if found is None:
            raise ValueError(f"Expected {path!r} to point to a Task instance.")
        run_after = record.payload.get("run_after")
        changes = {
            "queue_name": record.channel,
            "backend": self.alias,
            "run_after": datetime.fromisoformat(run_after) if run_after else None,
        }
        if isinstance(found, ChannelsTask):
            changes["owner_id"] = record.owner_id
        if any(getattr(found, name) != value for name, value in changes.items()):
            found = replace(found, **changes)
        return found

    def _result(
        self, record: TaskRecord, attempts: list[AttemptRecord], task: Task
    ) -> TaskResult:
        result = TaskResult(
            task=task,
            id=str(record.id),
            status=STATUSES[Status(record.status)],
            enqueued_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at if record.is_final else None,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            args=record.payload["args"],
            kwargs=record.payload["kwargs"],
            backend=self.alias,
            errors=[task_error(a) for a in attempts if a.error_class],
            worker_ids=[a.worker for a in attempts],
        )
        if record.status == Status.SUCCEEDED:
            object.__setattr__(result, "_return_value", record.result)
        return result


def _import_task(path: str) -> Any:
    """The Task that ``path`` names (as workers find it), or None."""
    try:
        found = import_string(path)
    except ImportError:
        return None
    return found if isinstance(found, Task) else None


# Their names here before they moved to options and taskdata.
_lists = taskdata._lists
_queue_problem = queue_problem
_run_after_problem = run_after_problem
_retry_problem = retry_problem
_check_queues = check_queues
_eager_option = eager_option
_backend_options = backend_options
