"""Checking that a payload can travel: msgpack on the layer, JSON in the store."""

from __future__ import annotations

import math
from typing import Any

from .exceptions import InvalidPayload

#: Types that both msgpack and JSON carry without loss.
SCALARS = (str, int, float, bool, type(None))
MAX_DEPTH = 64
MAX_INT = 2**63 - 1


def validate_payload(payload: Any, name: str = "payload") -> None:
    """Raise :class:`InvalidPayload` naming the first value that cannot travel.

    Allowed: dicts with ``str`` keys, lists, ``str``, ``int`` (64-bit), finite
    ``float``, ``bool`` and ``None``. Tuples, bytes, sets, dates, Decimals and
    objects are refused rather than silently converted, so that what the handler
    receives is exactly what was enqueued.
    """
    if not isinstance(payload, dict):
        raise InvalidPayload(name, f"must be a dict, not {type(payload).__name__}")
    _check(payload, name, 0)


def _check(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidPayload(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(
                    f"{path}[{key!r}]", f"key must be str, not {type(key).__name__}"
                )
            _check_text(key, f"{path}[{key!r}] (the key)")
            _check(item, f"{path}[{key!r}]", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidPayload(path, f"{value!r} is not valid JSON")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise InvalidPayload(path, "integer does not fit in 64 bits")
    elif not isinstance(value, SCALARS):
        raise InvalidPayload(
            path,
            f"{type(value).__name__} is not msgpack/JSON safe "
            "(use dict, list, str, int, float, bool or None)",
        )


def _check_text(text: str, path: str) -> None:
    # msgpack needs UTF-8, and PostgreSQL's jsonb refuses NUL characters.
    if "\x00" in text:
        raise InvalidPayload(path, "contains a NUL character, which JSON stores refuse")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayload(path, "is not valid UTF-8 (a lone surrogate)") from None
