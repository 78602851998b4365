"""Helpers for testing code that uses retrying_consumers.

::

    from retrying_consumers.testing import perform

    def test_thumbnail_is_retried_then_made(db):
        outcome = perform(ThumbnailConsumer, "thumbnail.generate", {"image_id": 1})
        assert outcome.status == "succeeded"
        assert outcome.attempts == 2

Names are imported lazily, so that importing this package does not need
Django's app registry to be ready.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Outcome": "performing",
    "perform": "performing",
    "aperform": "performing",
    "drain": "draining",
    "adrain": "draining",
    "DrainTimeout": "draining",
    "PrivateRedis": "redis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(
            f"module 'retrying_consumers.testing' has no attribute {name!r}"
        )
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
