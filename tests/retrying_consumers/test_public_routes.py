"""``enqueue`` refuses a channel that no consumer of the ASGI application
routes, where it would wait forever."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from channels.routing import ProtocolTypeRouter
from django.test import override_settings

from retrying_consumers import (
    InvalidArgument,
    aenqueue,
    aenqueue_many,
    checks,
    enqueue,
    enqueue_many,
    producer,
)
from retrying_consumers.models import TaskRecord
from tests import django_tasks_defs as defs

pytestmark = pytest.mark.django_db(transaction=True)

TYPE = "thumbnail.generate"
#: An application without a ``channel`` router: its routes are unknown.
NO_CHANNEL_ROUTER = ProtocolTypeRouter({})
HERE = __name__


@pytest.fixture(autouse=True)
def route_check(
    unrouted_channels: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
) -> None:
    """The route check, which the test session switches off (tests/conftest.py)."""
    monkeypatch.setattr(producer, "check_route", unrouted_channels)
    checks.routed_channels.cache_clear()


def test_an_unrouted_channel_is_refused_naming_the_routed_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        enqueue("thumbnails", TYPE, {})
    error = caught.value
    assert error.argument == "channel"
    assert "'thumbnails'" in error.problem
    for routed in ("'default'", "'examples'", "'realtime-ping'"):
        assert routed in error.problem
    assert "CHECK_ROUTES" in error.problem
    assert not TaskRecord.objects.exists()


def test_a_routed_channel_is_accepted() -> None:
    task_id = enqueue("examples", "example.flaky", {"fail_times": 0})
    assert TaskRecord.objects.get(pk=task_id).channel == "examples"


async def test_aenqueue_refuses_an_unrouted_channel() -> None:
    with pytest.raises(InvalidArgument, match="channel"):
        await aenqueue("thumbnails", TYPE, {})


def test_enqueue_many_refuses_an_unrouted_channel() -> None:
    with pytest.raises(InvalidArgument, match="channel"):
        enqueue_many("thumbnails", TYPE, [{}, {}])
    assert not TaskRecord.objects.exists()


async def test_aenqueue_many_refuses_an_unrouted_channel() -> None:
    with pytest.raises(InvalidArgument, match="channel"):
        await aenqueue_many("thumbnails", TYPE, [{}])


def test_a_django_task_on_the_default_queue_is_accepted() -> None:
    result = defs.echo.enqueue(1, two=2)
    assert TaskRecord.objects.get(pk=result.id).channel == "default"


def test_the_check_can_be_switched_off(settings: Any) -> None:
    settings.RETRYING_CONSUMERS = {"CHECK_ROUTES": False}
    task_id = enqueue("thumbnails", TYPE, {})
    assert TaskRecord.objects.get(pk=task_id).channel == "thumbnails"


@pytest.mark.parametrize(
    "path",
    [
        "tests.no_such_module.application",
        f"{HERE}.NO_CHANNEL_ROUTER",
        None,
    ],
    ids=["cannot be loaded", "no channel router", "not set"],
)
def test_without_known_routes_every_channel_is_accepted(path: str | None) -> None:
    with override_settings(ASGI_APPLICATION=path):
        task_id = enqueue("thumbnails", TYPE, {})
    assert TaskRecord.objects.get(pk=task_id).channel == "thumbnails"


def test_the_application_is_loaded_once_until_a_setting_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[int] = []
    real = checks.load_application

    def counted() -> tuple[Any, str | None]:
        loads.append(1)
        return real()

    monkeypatch.setattr(checks, "load_application", counted)
    for _ in range(3):
        enqueue("examples", "example.flaky", {})
    assert len(loads) == 1
    with override_settings(ASGI_APPLICATION=f"{HERE}.NO_CHANNEL_ROUTER"):
        enqueue("thumbnails", TYPE, {})
    assert len(loads) == 2
    with pytest.raises(InvalidArgument):
        enqueue("thumbnails", TYPE, {})
    assert len(loads) == 3
