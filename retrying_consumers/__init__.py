"""Retries, backoff, dead-lettering and durable task state for Django Channels.

Public API::

    from retrying_consumers import RetryMixin, RetryPolicy, enqueue, GiveUp, RetryLater

Names are imported lazily so that importing the package does not need Django's
app registry to be ready.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "RetryPolicy": "policy",
    "Action": "policy",
    "Decision": "policy",
    "AttemptState": "policy",
    "PROGRAMMING_ERRORS": "policy",
    "retry_after_hint": "policy",
    "RetryMixin": "mixin",
    "TaskContext": "mixin",
    "enqueue": "producer",
    "aenqueue": "producer",
    "enqueue_many": "producer",
    "aenqueue_many": "producer",
    "enqueue_group": "producer",
    "aenqueue_group": "producer",
    "retry_now": "producer",
    "cancel": "producer",
    "report_progress": "progress",
    "is_cancelled": "attempts",
    "periodic": "schedules",
    "GiveUp": "exceptions",
    "RetryLater": "exceptions",
    "WorkerLost": "exceptions",
    "AttemptTimedOut": "exceptions",
    "AttemptInterrupted": "exceptions",
    "AttemptCancelled": "exceptions",
    "InvalidPayload": "exceptions",
    "InvalidArgument": "exceptions",
    "IdempotencyConflict": "exceptions",
    "RetryingConsumersError": "exceptions",
    "TaskNotFound": "exceptions",
    "ConfigurationError": "exceptions",
    "RetryingAsyncConsumer": "consumers",
    "RetryingSyncConsumer": "consumers",
    "RetryingWebsocketConsumer": "consumers",
    "RetryingAsyncWebsocketConsumer": "consumers",
    "RetryingJsonWebsocketConsumer": "consumers",
    "RetryingAsyncJsonWebsocketConsumer": "consumers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'retrying_consumers' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
