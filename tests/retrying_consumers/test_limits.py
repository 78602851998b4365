"""Limits per message type, judged in the store: how many run, how many start."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.db import close_old_connections

from retrying_consumers import RetryPolicy, limits, store
from retrying_consumers.exceptions import InvalidPolicy, TaskNotFound
from retrying_consumers.limits import Deferred, claim_limited, waiting_ids
from retrying_consumers.models import Status, TaskLimiter, TaskRecord
from retrying_consumers.policy import parse_rate
from retrying_consumers.sql import ClaimRequest

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "limits"
TYPE = "report.build"
RING = 30.0


def new_task(type: str = TYPE, channel: str = CHANNEL) -> TaskRecord:
    task, _ = store.create_task(
        channel=channel, type=type, payload={}, ring_timeout=RING
    )
    return task


def claim(task: TaskRecord, policy: RetryPolicy, type: str = TYPE) -> Any:
    return claim_limited(
        ClaimRequest(task.id, task.attempt + 1, policy.max_attempts, CHANNEL),
        type,
        policy,
        worker="host:1",
        lease_seconds=60,
        ring_timeout=RING,
    )


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/s", (10, 1.0)), ("100/m", (100, 60.0)), ("5/10s", (5, 10.0))],
)
def test_rates_read_as_starts_per_period(text: str, rate: tuple[int, float]) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["", "10", "0/s", "10/d", "1/0s", "x/s", 10, "-1/s"])
def test_a_bad_rate_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(InvalidPolicy, match="rate_limit"):
        RetryPolicy(rate_limit=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_a_bad_max_running_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(InvalidPolicy, match="max_running"):
        RetryPolicy(max_running=bad)


def test_at_most_max_running_are_claimed_and_the_rest_wait_unclaimed() -> None:
    policy = RetryPolicy(max_running=2)
    tasks = [new_task() for _ in range(4)]
    first, second, third, fourth = (claim(t, policy) for t in tasks)
    assert isinstance(first, TaskRecord) and isinstance(second, TaskRecord)
    assert isinstance(third, Deferred) and isinstance(fourth, Deferred)
    assert third.why == "2 of at most 2 running"
    waiting = TaskRecord.objects.get(pk=tasks[2].id)
    assert waiting.status == Status.QUEUED and waiting.attempt == 0
    assert waiting.due_at == third.until
    # Another type of the same channel is not limited by this one.
    assert isinstance(claim(new_task("other"), policy, "other"), TaskRecord)

    assert store.succeed(tasks[0].id, 1, worker="host:1", result=None)
    # The oldest waiting task is made due, to be rung; it then gets the slot.
    assert waiting_ids(CHANNEL, TYPE, 1) == [tasks[2].id]
    assert isinstance(claim(tasks[2], policy), TaskRecord)
    assert isinstance(claim(tasks[3], policy), Deferred)


def test_a_limited_claim_runs_only_a_task_of_its_own_type_and_channel() -> None:
    policy = RetryPolicy(max_running=5)
    task = new_task()
    assert claim(task, policy, type="some.other.type") is None
    elsewhere = new_task(channel="elsewhere")
    assert claim(elsewhere, policy) is None
    with pytest.raises(TaskNotFound):
        claim_limited(
            ClaimRequest(uuid.uuid4(), 1, 5, CHANNEL),
            TYPE,
            policy,
            worker="w",
            lease_seconds=60,
            ring_timeout=RING,
        )
    assert isinstance(claim(task, policy), TaskRecord)
    assert claim(task, policy) is None, "a duplicate ring claims nothing"


def test_a_rate_lets_n_start_then_hands_out_slots_a_period_over_n_apart() -> None:
    policy = RetryPolicy(rate_limit="2/s")
    tasks = [new_task() for _ in range(5)]
    started = time.time()
    outcomes = [claim(t, policy) for t in tasks]
    assert all(isinstance(o, TaskRecord) for o in outcomes[:2])
    held = outcomes[2:]
    assert all(isinstance(o, Deferred) and not o.brief for o in held)
    slots = [o.until.timestamp() - started for o in held]
    # The first slot is a period after the first start; the next ones follow
    # at period / N.
    assert 0.9 <= slots[0] <= 1.2
    assert slots[1] - slots[0] == pytest.approx(0.5, abs=0.01)
    assert slots[2] - slots[1] == pytest.approx(0.5, abs=0.01)
    for task, outcome in zip(tasks[2:], held, strict=True):
        assert TaskRecord.objects.get(pk=task.id).due_at == outcome.until


def test_a_start_the_rate_allows_within_moments_is_waited_for_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "BRIEF_WAIT", 1.5)
    policy = RetryPolicy(rate_limit="10/2s")
    tasks = [new_task() for _ in range(11)]
    for task in tasks[:10]:
        assert isinstance(claim(task, policy), TaskRecord)
    [first, *_] = TaskLimiter.objects.get().starts
    time.sleep(max(0.0, first + 2.0 - 1.0 - time.time()))  # 1 s before
    before = TaskRecord.objects.get(pk=tasks[10].id).due_at
    outcome = claim(tasks[10], policy)
    assert isinstance(outcome, Deferred) and outcome.brief
    assert TaskRecord.objects.get(pk=tasks[10].id).due_at == before


def test_concurrent_claims_never_exceed_max_running() -> None:
    policy = RetryPolicy(max_running=3)
    tasks = [new_task() for _ in range(12)]
    results: list[Any] = []
    start = threading.Barrier(len(tasks))

    def claimer(task: TaskRecord) -> None:
        try:
            start.wait()
            results.append(claim(task, policy))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=claimer, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, TaskRecord) for r in results) == 3
    assert sum(isinstance(r, Deferred) for r in results) == 9
    assert TaskRecord.objects.filter(status=Status.RUNNING).count() == 3
