"""A burst far beyond the channel's capacity, served by real runworker processes."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from django.db import transaction

from retrying_consumers import doorbell, enqueue
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.e2e.fault_settings import RETRYING_CONSUMERS
from tests.processes import running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CAPACITY = 3


@pytest.fixture
def tiny_channels(settings: Any, redis_client: Any) -> Iterator[None]:
    """This process and its workers: channels of CAPACITY messages."""
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["capacity"] = CAPACITY
    settings.CHANNEL_LAYERS = layers
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_a_burst_into_a_full_channel_runs_every_task_exactly_once(
    tiny_channels: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert get_channel_layer().capacity == CAPACITY
    children = start_workers(
        tmp_path,
        2,
        ["fault-a"],
        "tests.e2e.fault_settings",
        CHANNEL_CAPACITY=str(CAPACITY),
    )
    with running(children):
        with transaction.atomic():
            ids = [enqueue("fault-a", "fault.noop") for _ in range(1000)]
        # Rung together at the commit: most rings are refused (ChannelFull).
        assert doorbell.flush()
        assert any("ChannelFull" in r.getMessage() for r in caplog.records)
        wait_until(
            lambda: (
                TaskRecord.objects.filter(pk__in=ids, status=Status.SUCCEEDED).count()
                == len(ids)
            ),
            90,
            "every task to succeed",
        )
        assert all(child.alive() for child in children)
    runs = Counter(
        AttemptRecord.objects.filter(task_id__in=ids).values_list("task_id", flat=True)
    )
    assert len(runs) == len(ids)
    assert set(runs.values()) == {1}
