"""What ``Task.enqueue`` on ``ChannelsBackend`` refuses: a clear error, no task.

Arguments go through Django's ``normalize_json`` and the library's payload
check; task options through Django's ``validate_task`` and the backend's own.
Each refusal must be the same on SQLite and PostgreSQL, and store nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend
from django.test import override_settings

from retrying_consumers.models import TaskRecord
from retrying_consumers.payload import MAX_DEPTH
from retrying_consumers.tasks_backend import ChannelsBackend, InvalidTaskData
from tests import django_tasks_defs as defs

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "retrying_consumers.tasks_backend.ChannelsBackend"
SETTING = "RETRYING_CONSUMERS['MAX_PAYLOAD_BYTES']"


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    """Accepted tasks ring the test Redis."""


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_tuples(depth: int) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for _ in range(depth - 1):
        value = (value,)
    return value


def nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def looped() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def shared_levels(levels: int) -> list[Any]:
    """A list that JSON writes out as 2**levels leaves, held in a few objects."""
    level: list[Any] = []
    for _ in range(levels):
        level = [level, level]
    return level


#: Calls whose arguments JSON cannot carry: name -> (args, kwargs, path named).
REFUSED_ARGUMENTS: dict[str, tuple[tuple[Any, ...], dict[str, Any], str]] = {
    "lists nested 10,000 deep": (
        (nested_lists(10_000),),
        {},
        "task['args'][0]" + "[0]" * (MAX_DEPTH - 1),
    ),
    "tuples nested 10,000 deep": (
        (nested_tuples(10_000),),
        {},
        "task['args'][0]" + "[0]" * (MAX_DEPTH - 1),
    ),
    "dicts nested 10,000 deep": (
        (),
        {"d": nested_dicts(10_000)},
        "task['kwargs']['d']" + "['a']" * (MAX_DEPTH - 1),
    ),
    "a list holding itself": (
        (looped(),),
        {},
        "task['args'][0]" + "[0]" * (MAX_DEPTH - 1),
    ),
    "a dict key nested 10,000 deep": (
        (),
        {"d": {nested_tuples(10_000): 1}},
        "task['kwargs']['d'][((((...),),),)]",
    ),
    "an object": ((object(),), {}, "task['args'][0]"),
    "bytes that are not UTF-8": ((b"\xff",), {}, "task['args'][0]"),
    "a NUL character": (("a\x00b",), {}, "task['args'][0]"),
}


@pytest.mark.parametrize("case", REFUSED_ARGUMENTS.keys())
def test_arguments_json_cannot_carry_are_named(case: str) -> None:
    args, kwargs, path = REFUSED_ARGUMENTS[case]
    with pytest.raises(InvalidTaskData) as caught:
        defs.echo.enqueue(*args, **kwargs)
    assert caught.value.path == path
    assert isinstance(caught.value, TypeError)
    assert len(str(caught.value)) < 2000
    assert not TaskRecord.objects.exists()


@pytest.mark.parametrize("case", REFUSED_ARGUMENTS.keys())
async def test_aenqueue_refuses_arguments_exactly_as_enqueue_does(case: str) -> None:
    args, kwargs, _ = REFUSED_ARGUMENTS[case]
    with pytest.raises(InvalidTaskData) as expected:
        await database_sync_to_async(defs.echo.enqueue)(*args, **kwargs)
    with pytest.raises(InvalidTaskData) as caught:
        await defs.echo.aenqueue(*args, **kwargs)
    assert str(caught.value) == str(expected.value)
    assert not await database_sync_to_async(TaskRecord.objects.exists)()


def test_nesting_is_refused_with_its_depth() -> None:
    with pytest.raises(InvalidTaskData, match=f"nested deeper than {MAX_DEPTH}"):
        defs.echo.enqueue(nested_lists(10_000))


@override_settings(RETRYING_CONSUMERS={"MAX_PAYLOAD_BYTES": 1000})
@pytest.mark.parametrize("size", [990, 2000, 10**6])
def test_arguments_past_the_payload_limit_are_refused(size: int) -> None:
    # The task's stored payload also names its function and backend: arguments
    # a little under the limit still make a payload over it.
    with pytest.raises(InvalidTaskData) as caught:
        defs.echo.enqueue("x" * size)
    assert caught.value.path == "task"
    assert "1000 bytes" in caught.value.problem
    assert SETTING in caught.value.problem
    assert not TaskRecord.objects.exists()


@override_settings(RETRYING_CONSUMERS={"MAX_PAYLOAD_BYTES": 1000})
def test_arguments_under_the_payload_limit_are_kept() -> None:
    result = defs.echo.enqueue("x" * 800)
    assert TaskRecord.objects.get(pk=result.id).payload["args"] == ["x" * 800]


@pytest.mark.timeout(30)
def test_arguments_that_unfold_past_the_limit_are_refused_quickly() -> None:
    with pytest.raises(InvalidTaskData) as caught:
        defs.echo.enqueue(shared_levels(60))
    assert caught.value.path == "task"
    assert SETTING in caught.value.problem
    assert not TaskRecord.objects.exists()


def far_future_west() -> datetime:
    # Valid where it is, but past year 9999 in UTC, where stores keep it.
    return datetime.max.replace(tzinfo=timezone(timedelta(hours=-14)))


#: Task options that must be refused: name -> (changes, text of the error).
REFUSED_OPTIONS: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "queue_name as a list": (lambda: {"queue_name": ["default"]}, "queue_name"),
    "queue_name None": (lambda: {"queue_name": None}, "None"),
    "run_after as text": (
        lambda: {"run_after": "2030-01-01T00:00:00+00:00"},
        "run_after must be an aware datetime",
    ),
    "run_after as a date": (
        lambda: {"run_after": date(2030, 1, 1)},
        "run_after must be an aware datetime",
    ),
    "run_after past year 9999 in UTC": (
        lambda: {"run_after": far_future_west()},
        "run_after",
    ),
    "priority NaN": (lambda: {"priority": float("nan")}, "priority"),
    "priority as text": (lambda: {"priority": "high"}, "priority"),
    "max_attempts 2**31": (lambda: {"max_attempts": 2**31}, "max_attempts"),
    "max_attempts 10**20": (lambda: {"max_attempts": 10**20}, "max_attempts"),
}


@pytest.mark.parametrize("case", REFUSED_OPTIONS.keys())
def test_odd_task_options_are_refused_as_invalid_tasks(case: str) -> None:
    changes, text = REFUSED_OPTIONS[case]
    with pytest.raises(InvalidTask, match=text):
        replace(defs.echo, **changes()).enqueue()
    assert not TaskRecord.objects.exists()


def test_the_task_max_attempts_limit_is_kept() -> None:
    result = replace(defs.echo, max_attempts=1_000_000).enqueue()
    assert TaskRecord.objects.get(pk=result.id).max_attempts == 1_000_000


def test_run_after_late_in_year_9999_is_kept() -> None:
    when = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    result = defs.echo.using(run_after=when).enqueue()
    assert TaskRecord.objects.get(pk=result.id).due_at == when


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"OPTIONS": {"MAX_ATTEMPTS": 2**31}}, r"\['MAX_ATTEMPTS'\] must be an int"),
        ({"QUEUES": "default"}, r"\['QUEUES'\] must be a list"),
        ({"QUEUES": [["default"]]}, "are not channel names"),
    ],
    ids=["MAX_ATTEMPTS 2**31", "QUEUES as one str", "QUEUES holding a list"],
)
def test_odd_backend_settings_are_refused(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidTaskBackend, match=problem):
        ChannelsBackend("x", {"BACKEND": BACKEND, **params})


def test_the_default_backend_is_a_channels_backend() -> None:
    assert isinstance(task_backends["default"], ChannelsBackend)
