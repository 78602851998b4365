"""Tests for retrying_consumers.payload: what may travel, and where it went wrong."""

from __future__ import annotations

import datetime
import json
import math
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import msgpack
import pytest

from retrying_consumers.exceptions import InvalidPayload, RetryingConsumersError
from retrying_consumers.payload import (
    MAX_DEPTH,
    MAX_INT,
    SIZE_SETTING,
    check_nesting,
    validate_payload,
)


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """A payload whose ``leaf`` sits ``depth`` keys deep: ``{"a": {"a": leaf}}``."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = {"a": value}
    return {"a": value}


def deep_path(depth: int) -> str:
    return "payload" + "['a']" * depth


ACCEPTED = {
    "empty dict": {},
    "str": {"name": "café ☕ 𝄞"},
    "empty str": {"": ""},
    "int": {"n": 42},
    "negative int": {"n": -7},
    "largest 64-bit int": {"n": MAX_INT},
    "smallest 64-bit int": {"n": -MAX_INT - 1},
    "float": {"x": 0.1},
    "negative zero": {"x": -0.0},
    "huge finite float": {"x": 1.7976931348623157e308},
    "bools": {"yes": True, "no": False},
    "None": {"nothing": None},
    "empty list": {"items": []},
    "nested dicts and lists": {
        "items": [
            {"id": 1, "tags": ["a", "b"], "meta": {"ok": True, "score": 0.5}},
            {"id": 2, "tags": [], "meta": {"ok": None, "nested": [[1, [2, [3]]]]}},
        ],
        "config": {"retries": {"max": 3, "backoff": [10, 20, 40]}},
    },
    "exactly MAX_DEPTH deep": nested(MAX_DEPTH),
}


@pytest.mark.parametrize("payload", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_payloads_survive_msgpack_and_json(payload: dict[str, Any]) -> None:
    assert validate_payload(payload) is None
    # What is accepted must reach the handler exactly as enqueued.
    assert msgpack.unpackb(msgpack.packb(payload), strict_map_key=False) == payload
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload


class Opaque:
    pass


REFUSED = {
    "datetime deep in a list": (
        {"items": [{}, {}, {"when": datetime.datetime(2015, 10, 21, 7, 28)}]},
        "payload['items'][2]['when']",
    ),
    "date": ({"day": datetime.date(2015, 10, 21)}, "payload['day']"),
    "int key": ({"ok": 1, "nested": {1: "one"}}, "payload['nested'][1]"),
    "None key": ({None: 1}, "payload[None]"),
    "tuple key": ({(1, 2): "pair"}, "payload[(1, 2)]"),
    "bool key": ({True: "yes"}, "payload[True]"),
    "tuple value": ({"point": (1, 2)}, "payload['point']"),
    "bytes": ({"blob": b"\x00\x01"}, "payload['blob']"),
    "bytearray": ({"blob": bytearray(b"x")}, "payload['blob']"),
    "set": ({"tags": {"a"}}, "payload['tags']"),
    "frozenset": ({"tags": frozenset()}, "payload['tags']"),
    "Decimal": ({"price": Decimal("9.99")}, "payload['price']"),
    "object": ({"thing": Opaque()}, "payload['thing']"),
    "function": ({"callback": len}, "payload['callback']"),
    "NaN": ({"x": math.nan}, "payload['x']"),
    "infinity": ({"x": math.inf}, "payload['x']"),
    "negative infinity in a list": ({"xs": [1.0, -math.inf]}, "payload['xs'][1]"),
    "int one past 64 bits": ({"n": MAX_INT + 1}, "payload['n']"),
    "int one below 64 bits": ({"n": -MAX_INT - 2}, "payload['n']"),
    "huge int in a list": ({"ns": [0, 10**30]}, "payload['ns'][1]"),
    "one level too deep": (nested(MAX_DEPTH + 1), deep_path(MAX_DEPTH + 1)),
    "first bad value wins": (
        {"ok": [1, 2], "bad": [3, {"x": b"1"}], "worse": object()},
        "payload['bad'][1]['x']",
    ),
    "quote in key": ({"it's": {"k": set()}}, "payload[\"it's\"]['k']"),
}


@pytest.mark.parametrize(("payload", "path"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_values_are_named_by_their_exact_path(
    payload: dict[Any, Any], path: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload)
    assert caught.value.path == path
    assert caught.value.problem
    assert str(caught.value).startswith(f"{path}: ")


NOT_DICTS = {
    "list": [1, 2],
    "None": None,
    "str": "payload",
    "int": 3,
    "tuple": (("a", 1),),
    "bytes": b"{}",
}


@pytest.mark.parametrize("payload", NOT_DICTS.values(), ids=NOT_DICTS.keys())
def test_a_payload_that_is_not_a_dict_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload)
    assert caught.value.path == "payload"
    assert type(payload).__name__ in caught.value.problem


def test_the_name_argument_starts_the_path() -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload({"rows": [None, {1.5}]}, name="result")
    assert caught.value.path == "result['rows'][1]"


def test_invalid_payload_is_a_value_error_of_the_library() -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload({"x": b""})
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, RetryingConsumersError)


def test_nesting_far_too_deep_is_refused_without_recursion_error() -> None:
    deep: list[Any] = []
    payload = {"list": deep}
    for _ in range(100_000):
        inner: list[Any] = []
        deep.append(inner)
        deep = inner
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload)
    assert caught.value.path == "payload['list']" + "[0]" * MAX_DEPTH


def test_a_self_referencing_payload_is_refused_as_too_deep() -> None:
    payload: dict[str, Any] = {}
    payload["self"] = payload
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload)
    assert caught.value.path == "payload" + "['self']" * (MAX_DEPTH + 1)


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"text": "half a pair \ud83d"}, "payload['text']"),
        ({"list": ["ok", "\udfff"]}, "payload['list'][1]"),
        ({"\udc00": 1}, "payload['\\udc00'] (the key)"),
    ],
    ids=["value", "list item", "key"],
)
def test_a_str_that_is_not_utf8_encodable_is_refused(
    payload: dict[str, Any], path: str
) -> None:
    # msgpack cannot encode it, and PostgreSQL's jsonb refuses it.
    with pytest.raises(UnicodeEncodeError):
        msgpack.packb(payload)
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"items": ["ok", "nul\x00here"]}, "payload['items'][1]"),
        ({"nested": {"k\x00": 1}}, "payload['nested']['k\\x00'] (the key)"),
    ],
    ids=["value", "key"],
)
def test_a_nul_character_is_refused(payload: dict[str, Any], path: str) -> None:
    # PostgreSQL's jsonb cannot store \u0000 (SQLite would).
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload)
    assert caught.value.path == path


def test_a_paired_surrogate_written_as_one_character_is_accepted() -> None:
    payload = {"clef": "\U0001d11e", "emoji": "\U0001f600"}
    validate_payload(payload)
    assert msgpack.unpackb(msgpack.packb(payload)) == payload


def test_a_key_nested_too_deep_to_print_is_named_in_short() -> None:
    key: tuple[Any, ...] = ()
    for _ in range(10_000):
        key = (key,)
    with pytest.raises(InvalidPayload) as caught:
        validate_payload({"d": {key: 1}})
    assert caught.value.path == "payload['d'][((((...),),),)]"


# The size limit --------------------------------------------------------------------


def compact_size(payload: dict[str, Any]) -> int:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode())


AT_THE_LIMIT = {
    "ASCII": {"s": "x" * 92},
    "four-byte characters": {"s": "\U0001f600" * 23},
    "escapes": {"s": '"\\' * 23 + "ab"},
    "numbers": {"n": [10**17, -1.5e-300, 0.1, True, None, 1, 2, 3, 4, 5, 6]},
    "nested": {"a": [{"b": [[], {}]}] * 6 + [{"bb": 1}]},
}


@pytest.mark.parametrize("payload", AT_THE_LIMIT.values(), ids=AT_THE_LIMIT.keys())
def test_the_limit_counts_bytes_of_compact_json(payload: dict[str, Any]) -> None:
    size = compact_size(payload)
    validate_payload(payload, max_bytes=size)
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload, max_bytes=size - 1)
    assert caught.value.path == "payload"
    assert caught.value.problem == (
        f"is more than {size - 1} bytes as JSON (the limit set by {SIZE_SETTING})"
    )


def test_without_a_limit_size_is_not_checked() -> None:
    validate_payload({"s": "x" * 2_000_000})


def test_a_bad_value_is_named_before_the_size_is_known() -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload({"bad": {1}, "big": "x" * 1000}, max_bytes=100)
    assert caught.value.path == "payload['bad']"


def test_a_payload_unfolding_to_2_to_the_60_values_is_refused_at_once() -> None:
    level: list[Any] = []
    for _ in range(60):
        level = [level, level]
    with pytest.raises(InvalidPayload) as caught:
        validate_payload({"tree": level}, max_bytes=10_000)
    assert caught.value.path == "payload"


# Nesting, before anything recurses -------------------------------------------------


def test_check_nesting_counts_every_mapping_and_sequence_as_a_level() -> None:
    value: Any = "leaf"
    for n in range(100):
        value = (value,) if n % 2 else MappingProxyType({"m": value})
    with pytest.raises(InvalidPayload) as caught:
        check_nesting({"v": value}, "task")
    assert caught.value.path.startswith("task['v'][0]['m'][0]['m']")
    assert caught.value.path.count("[") == MAX_DEPTH + 1
    assert caught.value.problem == f"nested deeper than {MAX_DEPTH} levels"


def test_check_nesting_takes_str_and_bytes_as_leaves() -> None:
    check_nesting({"s": "x" * 10_000, "b": b"y" * 10_000}, "task")
    check_nesting({"a": nested(MAX_DEPTH - 1)}, "task")


def test_check_nesting_refuses_a_container_as_a_key() -> None:
    with pytest.raises(InvalidPayload) as caught:
        check_nesting({"d": {(1, 2): "pair"}}, "task")
    assert caught.value.path == "task['d'][(1, 2)]"
    assert caught.value.problem == "key must be str, not tuple"


def test_check_nesting_stops_once_past_the_limit() -> None:
    shared = [[]] * 1000
    check_nesting({"xs": shared}, "task", max_bytes=5000)
    with pytest.raises(InvalidPayload) as caught:
        check_nesting({"xs": [shared] * 1000}, "task", max_bytes=5000)
    assert caught.value.path == "task"
    assert SIZE_SETTING in caught.value.problem
