"""Whatever a message carries, a real runworker keeps serving: hostile batches,
message types that name the machinery, and handlers that raise SystemExit."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from retrying_consumers import enqueue
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.e2e.fault_settings import RETRYING_CONSUMERS
from tests.processes import Child, running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def short_rings(settings: Any, redis_client: Any) -> None:
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS


def workers(tmp_path: Path, args: list[str]) -> list[Child]:
    return start_workers(tmp_path, 1, args, "tests.e2e.fault_settings")


def push(redis_client: Any, channel: str, *messages: dict[str, Any]) -> None:
    """Put raw messages on a channel, as channels-redis's send does."""
    now = time.time()
    for message in messages:
        body = os.urandom(12) + msgpack.packb(message)
        redis_client.zadd(f"asgi{channel}".encode(), {body: now})


def ended(ids: list[Any]) -> bool:
    unfinished = ("queued", "running", "retrying")
    return not TaskRecord.objects.filter(pk__in=ids, status__in=unfinished).exists()


def test_empty_batches_and_machinery_types_leave_every_slot_free(
    tmp_path: Path, redis_client: Any
) -> None:
    # Two slots, and more bad batches than slots: each must give its slot back.
    [worker] = workers(tmp_path, ["fault-a", "fault-plain", "--concurrency", "2"])
    with running([worker]):
        rings = "retrying_consumers.rings"
        bad_batches = [{"type": rings, "rings": []} for _ in range(3)]
        bad_batches.append({"type": rings, "rings": [1, {"no": "type"}]})
        push(redis_client, "fault-a", *bad_batches)
        push(redis_client, "fault-a", {"type": "dispatch"}, {"type": "send"})
        push(redis_client, "fault-plain", {"type": "dispatch"}, {"type": "_x"})
        machinery = [enqueue("fault-a", t, {}) for t in ("dispatch", "decide_retry")]
        good = [enqueue("fault-a", "fault.noop", {}) for _ in range(4)]
        wait_until(lambda: ended(machinery + good), 20, "every task to end")
        plain = "no handler for type"
        wait_until(lambda: worker.output().count(plain) >= 2, 10, "plain refusals")
        assert worker.alive()
    assert TaskRecord.objects.filter(pk__in=good, status=Status.SUCCEEDED).count() == 4
    for task in TaskRecord.objects.filter(pk__in=machinery):
        assert (task.status, task.attempt, task.error_class) == (
            Status.DEAD,
            1,
            "NoHandler",
        )
    log = worker.output()
    assert log.count("problem=malformed batch of rings (no rings)") == 3
    assert log.count("problem=malformed batch of rings (2 of 2 bad)") == 1
    assert log.count(plain) == 2
    assert "RecursionError" not in log and "would deadlock" not in log


@pytest.mark.parametrize("channel", ["fault-a", "fault-sync"])
def test_system_exit_from_a_handler_is_a_failed_attempt(
    tmp_path: Path, channel: str
) -> None:
    [worker] = workers(tmp_path, [channel])
    with running([worker]):
        doomed = enqueue(channel, "fault.exit", {}, max_attempts=2)
        wait_until(lambda: ended([doomed]), 20, "the task to end")
        after = enqueue(
            channel, "fault.noop" if channel == "fault-a" else "fault.block", {}
        )
        wait_until(lambda: ended([after]), 20, "the next task to end")
        assert worker.alive()
    task = TaskRecord.objects.get(pk=doomed)
    # The default predicate retries Exception only: SystemExit is not retryable.
    assert (task.status, task.attempt, task.error_class) == (
        Status.DEAD,
        1,
        "SystemExit",
    )
    [attempt] = AttemptRecord.objects.filter(task_id=doomed)
    assert attempt.outcome == "failed" and "SystemExit" in attempt.traceback
    assert TaskRecord.objects.get(pk=after).status == Status.SUCCEEDED
    assert not re.search(r"interrupted", worker.output())
