"""Retries, backoff, dead-lettering and durable task state for Django Channels.

Public API::

    from retrying_consumers import RetryMixin, RetryPolicy, enqueue, GiveUp, RetryLater

Names are imported lazily so that importing the package does not need Django's
app registry to be ready.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import _moved

_moved.install()  # retrying_consumers.store and the other old paths still import

_EXPORTS = {
    "RetryPolicy": "core.policy",
    "Action": "core.policy",
    "Decision": "core.policy",
    "AttemptState": "core.policy",
    "PROGRAMMING_ERRORS": "core.policy",
    "retry_after_hint": "core.hints",
    "RetryMixin": "running.mixin",
    "TaskContext": "running.mixin",
    "enqueue": "producing.producer",
    "aenqueue": "producing.producer",
    "enqueue_many": "producing.producer",
    "aenqueue_many": "producing.producer",
    "enqueue_group": "producing.producer",
    "aenqueue_group": "producing.producer",
    "retry_now": "producing.producer",
    "cancel": "producing.producer",
    "report_progress": "live.progress",
    "is_cancelled": "running.context",
    "periodic": "recurring.schedules",
    "GiveUp": "core.exceptions",
    "RetryLater": "core.exceptions",
    "WorkerLost": "core.exceptions",
    "AttemptTimedOut": "core.exceptions",
    "AttemptInterrupted": "core.exceptions",
    "AttemptCancelled": "core.exceptions",
    "InvalidPayload": "core.exceptions",
    "InvalidArgument": "core.exceptions",
    "IdempotencyConflict": "core.exceptions",
    "RetryingConsumersError": "core.exceptions",
    "TaskNotFound": "core.exceptions",
    "ConfigurationError": "core.exceptions",
    "RetryingAsyncConsumer": "running.consumers",
    "RetryingSyncConsumer": "running.consumers",
    "RetryingWebsocketConsumer": "running.consumers",
    "RetryingAsyncWebsocketConsumer": "running.consumers",
    "RetryingJsonWebsocketConsumer": "running.consumers",
    "RetryingAsyncJsonWebsocketConsumer": "running.consumers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'retrying_consumers' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
