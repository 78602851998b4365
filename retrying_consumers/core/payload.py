"""Checking that a payload can travel: msgpack on the layer, JSON in the store."""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from .exceptions import InvalidPayload

#: Types that both msgpack and JSON carry without loss.
SCALARS = (str, int, float, bool, type(None))
MAX_DEPTH = 64
MAX_INT = 2**63 - 1
#: The setting that limits a payload's size (``LibrarySettings.max_payload_bytes``).
SIZE_SETTING = "RETRYING_CONSUMERS['MAX_PAYLOAD_BYTES']"

_REPR = reprlib.Repr(maxlevel=3, maxstring=60, maxlong=40, maxother=60)


def shown(value: Any) -> str:
    """A short ``repr`` of ``value`` for an error message, however big or deep."""
    return _REPR.repr(value)


def text_problem(text: str) -> str | None:
    """Why the stores cannot keep ``text``, or None if they can."""
    # msgpack needs UTF-8, and PostgreSQL refuses NUL characters in text and jsonb.
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a lone surrogate)"
    return None


def too_large(path: str, max_bytes: int) -> InvalidPayload:
    """The error for a payload past ``max_bytes`` bytes of JSON text."""
    return InvalidPayload(
        path,
        f"is more than {max_bytes} bytes as JSON (the limit set by {SIZE_SETTING})",
    )


def validate_payload(
    payload: Any, name: str = "payload", *, max_bytes: int | None = None
) -> None:
    """Raise :class:`InvalidPayload` naming the first value that cannot travel.

    Allowed: dicts with ``str`` keys, lists, ``str``, ``int`` (64-bit), finite
    ``float``, ``bool`` and ``None``, nested at most ``MAX_DEPTH`` deep. Tuples,
    bytes, sets, dates, Decimals and objects are refused rather than silently
    converted, so that what the handler receives is exactly what was enqueued.
    With ``max_bytes``, a payload whose compact UTF-8 JSON text is longer is
    refused too; the check stops early, so a payload that shares one big list
    many times over costs no more to refuse than one at the limit.
    """
    if not isinstance(payload, dict):
        raise InvalidPayload(name, f"must be a dict, not {type(payload).__name__}")
    _Checker(name, max_bytes).check(payload, name, 0)
    if max_bytes is not None and json_size(payload) > max_bytes:
        raise too_large(name, max_bytes)


def json_size(payload: Any) -> int:
    """Bytes of ``payload`` as compact UTF-8 JSON text (what the limit counts)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8"))


class _Checker:
    """One walk of a payload: values checked, and a lower bound of its size."""

    __slots__ = ("max_bytes", "name", "spent")

    def __init__(self, name: str, max_bytes: int | None) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.spent = 0

    def spend(self, size: int) -> None:
        # Each value's cost is at most its JSON text's (a str of n characters
        # is at least n bytes): refusing early never refuses a payload that
        # would fit.
        if self.max_bytes is not None:
            self.spent += size
            if self.spent > self.max_bytes:
                raise too_large(self.name, self.max_bytes)

    def check(self, value: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidPayload(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            self.spend(1 + len(value))
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidPayload(
                        f"{path}[{shown(key)}]",
                        f"key must be str, not {type(key).__name__}",
                    )
                _check_text(key, f"{path}[{key!r}] (the key)")
                self.spend(len(key) + 3)
                self.check(item, f"{path}[{key!r}]", depth + 1)
        elif isinstance(value, list):
            self.spend(1 + len(value))
            for index, item in enumerate(value):
                self.check(item, f"{path}[{index}]", depth + 1)
        elif isinstance(value, str):
            _check_text(value, path)
            self.spend(len(value) + 2)
        else:
            _check_scalar(value, path)
            self.spend(1)


def _check_scalar(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPayload(path, f"{value!r} is not valid JSON")
    if isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise InvalidPayload(path, "integer does not fit in 64 bits")
    elif not isinstance(value, SCALARS):
        raise InvalidPayload(
            path,
            f"{type(value).__name__} is not msgpack/JSON safe "
            "(use dict, list, str, int, float, bool or None)",
        )


def _check_text(text: str, path: str) -> None:
    problem = text_problem(text)
    if problem:
        raise InvalidPayload(path, problem)


def check_nesting(value: Any, name: str, max_bytes: int | None = None) -> None:
    """Refuse ``value`` if it is nested deeper than ``MAX_DEPTH``, or holds more
    values than ``max_bytes`` of JSON could, before anything recurses into it.

    Every ``Mapping`` and every ``Sequence`` but ``str`` and ``bytes`` counts as
    a level, as in Django's ``normalize_json``; a container used as a dict key
    is refused. The walk keeps its own stack, and stops at the first problem.
    """
    spent = 0
    # Each entry: a value, its depth, and its trail: (parent's trail, key).
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, trail = stack.pop()
        if depth > MAX_DEPTH:
            problem = f"nested deeper than {MAX_DEPTH} levels"
            raise InvalidPayload(_path(name, trail), problem)
        is_mapping = isinstance(item, Mapping)
        if not (is_mapping or _is_sequence(item)):
            continue
        if max_bytes is not None:
            spent += 1 + len(item)  # a lower bound of its JSON text's bytes
            if spent > max_bytes:
                raise too_large(name, max_bytes)
        children = list(item.items() if is_mapping else enumerate(item))
        for key, child in reversed(children):
            if is_mapping and (isinstance(key, Mapping) or _is_sequence(key)):
                problem = f"key must be str, not {type(key).__name__}"
                raise InvalidPayload(_path(name, (trail, key)), problem)
            stack.append((child, depth + 1, (trail, key)))


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _path(name: str, trail: Any) -> str:
    """``name['key'][0]...``: the path of a value from its trail."""
    steps = []
    while trail is not None:
        trail, key = trail
        steps.append(f"[{key!r}]" if isinstance(key, str) else f"[{shown(key)}]")
    return name + "".join(reversed(steps))
