"""Group commit: calls made together share one batch, each keeps its own result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import DatabaseError, connections

from retrying_consumers import attempts, batching, store
from retrying_consumers.exceptions import TaskNotFound
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from retrying_consumers.sql import ClaimRequest


class Recorder:
    """A ``run_many`` that records its batches; "bad" items fail alone."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate

    async def __call__(self, items: list[str]) -> list[Any]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(item) if item == "bad" else item.upper() for item in items]


async def test_calls_made_together_share_one_batch_in_order() -> None:
    run = Recorder()
    commit = batching.GroupCommit(run)
    results = await asyncio.gather(*(commit(x) for x in ["a", "b", "c"]))
    assert results == ["A", "B", "C"]
    assert run.batches == [["a", "b", "c"]]


async def test_each_item_gets_its_own_exception() -> None:
    commit = batching.GroupCommit(Recorder())
    results = await asyncio.gather(
        commit("a"), commit("bad"), commit("c"), return_exceptions=True
    )
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)


async def test_a_failing_batch_fails_every_caller_in_it() -> None:
    async def broken(items: list[str]) -> list[Any]:
        raise RuntimeError("database gone")

    commit = batching.GroupCommit(broken)
    results = await asyncio.gather(commit("a"), commit("b"), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await asyncio.gather(commit("c"), return_exceptions=True)  # usable again


async def test_calls_made_while_a_batch_runs_go_in_the_next_one() -> None:
    gate = asyncio.Event()
    run = Recorder(gate)
    commit = batching.GroupCommit(run)
    first = asyncio.create_task(commit("a"))
    while not run.batches:
        await asyncio.sleep(0)
    later = [asyncio.create_task(commit(x)) for x in ["b", "c"]]
    for _ in range(5):  # turns of the loop in which a second batch could leave
        await asyncio.sleep(0)
    assert run.batches == [["a"]]
    gate.set()
    assert await first == "A"
    assert [await t for t in later] == ["B", "C"]
    assert run.batches == [["a"], ["b", "c"]]


async def test_batches_hold_at_most_max_batch_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "MAX_BATCH", 2)
    run = Recorder()
    commit = batching.GroupCommit(run)
    await asyncio.gather(*(commit(x) for x in "abcde"))
    assert run.batches == [["a", "b"], ["c", "d"], ["e"]]


async def test_in_a_burst_linger_gathers_calls_spread_over_time() -> None:
    run = Recorder()
    commit = batching.GroupCommit(run, linger=0.05)
    assert await commit("lone") == "LONE"  # nothing before it: no wait
    first = asyncio.create_task(commit("a"))  # right after a batch: a burst
    await asyncio.sleep(0.01)
    second = asyncio.create_task(commit("b"))
    assert (await first, await second) == ("A", "B")
    assert run.batches == [["lone"], ["a", "b"]]


async def test_in_a_burst_calls_made_while_a_batch_runs_linger_too() -> None:
    # A batch on its way for longer than the gaps between calls: what came
    # meanwhile waits until ``linger`` has passed since that batch left, so
    # later calls still join it, instead of leaving the moment the batch is back.
    gate = asyncio.Event()
    run = Recorder(gate)
    commit = batching.GroupCommit(run, linger=0.2)
    first = asyncio.create_task(commit("a"))
    while not run.batches:
        await asyncio.sleep(0)
    second = asyncio.create_task(commit("b"))  # while "a" is on its way
    while not commit.pending:
        await asyncio.sleep(0)
    gate.set()
    assert await first == "A"
    for _ in range(5):  # turns of the loop in which "b" could leave at once
        await asyncio.sleep(0)
    assert run.batches == [["a"]]  # "a" is back; "b" still waits
    third = asyncio.create_task(commit("c"))
    assert (await second, await third) == ("B", "C")
    assert run.batches == [["a"], ["b", "c"]]


async def test_a_lone_call_does_not_linger() -> None:
    run = Recorder()
    commit = batching.GroupCommit(run, linger=5)
    assert await asyncio.wait_for(commit("a"), 1) == "A"


async def test_wait_returns_when_submitted_batches_have_run() -> None:
    run = Recorder()
    commit = batching.GroupCommit(run, linger=0.02)
    future = commit.submit("a")
    await commit.wait()
    assert future.done() and future.result() == "A"
    await commit.wait()  # nothing pending: returns at once


async def test_a_cancelled_caller_s_result_is_handed_to_orphaned() -> None:
    gate = asyncio.Event()
    orphans: list[tuple[str, Any]] = []

    async def orphaned(pairs: list[tuple[str, Any]]) -> None:
        orphans.extend(pairs)

    run = Recorder(gate)
    commit = batching.GroupCommit(run, orphaned)
    gone = asyncio.create_task(commit("a"))
    kept = asyncio.create_task(commit("b"))
    while not run.batches:
        await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await kept == "B"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert orphans == [("a", "A")]


async def test_a_failing_hand_back_is_logged(caplog) -> None:
    gate = asyncio.Event()

    async def orphaned(pairs: list[tuple[str, Any]]) -> None:
        raise RuntimeError("database gone")

    run = Recorder(gate)
    commit = batching.GroupCommit(run, orphaned)
    gone = asyncio.create_task(commit("a"))
    while not run.batches:
        await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    await commit.wait()
    [record] = [r for r in caplog.records if r.name == "retrying_consumers.batching"]
    assert "could not hand back 1 orphaned result(s)" in record.getMessage()
    assert await commit("b") == "B"  # the batcher goes on


async def test_the_running_loop_has_one_batcher_per_key() -> None:
    def make() -> batching.GroupCommit[str, str]:
        return batching.GroupCommit(Recorder())

    assert batching.group_commit("k", make) is batching.group_commit("k", make)
    assert batching.group_commit("k", make) is not batching.group_commit("j", make)


# The claim batcher of the attempts, on the real store ------------------------


@pytest.mark.django_db(transaction=True)
async def test_concurrent_claims_are_decided_one_by_one_in_one_batch() -> None:
    task, _ = await store.acreate_task(
        channel="c", type="job.run", payload={}, ring_timeout=30
    )
    claims = attempts._claims("w:1", 30)
    request = ClaimRequest(task.id, 1, 3)
    missing = ClaimRequest(store.parse_task_id("0" * 32), 1, 3)
    results = await asyncio.gather(
        claims(request), claims(request), claims(missing), return_exceptions=True
    )
    won, duplicate, unknown = results
    assert won.status == Status.RUNNING and won.attempt == 1
    assert duplicate is None  # same attempt, same batch: only one claim wins
    assert isinstance(unknown, TaskNotFound)
    count = await database_sync_to_async(AttemptRecord.objects.count)()
    assert count == 1


@pytest.mark.django_db(transaction=True)
async def test_a_claim_whose_attempt_was_cancelled_is_handed_back() -> None:
    task, _ = await store.acreate_task(
        channel="c", type="job.run", payload={}, ring_timeout=30
    )
    claims = attempts._claims("w:1", 30)
    waiter = asyncio.create_task(claims(ClaimRequest(task.id, 1, 3)))
    await asyncio.sleep(0)  # submitted; the batch leaves on the next turn
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await claims.wait()
    fresh = await store.aget_task(task.id)
    assert fresh.status == Status.QUEUED and fresh.due_at is not None
    # Handed back as interrupted: the task's budget grew by the lost attempt.
    assert (fresh.attempt, fresh.max_attempts) == (1, 4)
    attempt = await database_sync_to_async(AttemptRecord.objects.get)(task=task)
    assert attempt.outcome == "interrupted"


# Store calls: Django's database thread, health checks only where they tell -----


def count_health_checks(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Each health check Django makes of a connection to the test database."""
    checks: list[None] = []
    wrapper = type(connections["default"])
    is_usable = wrapper.is_usable

    def counted(self: Any) -> bool:
        checks.append(None)
        return bool(is_usable(self))

    monkeypatch.setattr(wrapper, "is_usable", counted)
    return checks


def count_tasks() -> int:
    return TaskRecord.objects.count()


@pytest.mark.django_db(transaction=True)
async def test_batches_back_to_back_skip_the_health_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert connections["default"].settings_dict["CONN_HEALTH_CHECKS"]
    checks = count_health_checks(monkeypatch)
    call = batching.StoreCall(count_tasks)
    for _ in range(3):
        assert await call() == 0
    assert len(checks) <= 1  # the first call's, if the connection was new
    # Once HEALTHY_FOR has passed, each call checks again, as Django does.
    monkeypatch.setattr(batching, "HEALTHY_FOR", 0.0)
    before = len(checks)
    await call()
    await call()
    assert len(checks) == before + 2


@pytest.mark.django_db(transaction=True)
async def test_a_batch_after_a_database_error_checks_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks = count_health_checks(monkeypatch)

    def broken() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    call = batching.StoreCall(count_tasks)
    await call()
    with pytest.raises(DatabaseError):
        await batching.StoreCall(broken)()
    before = len(checks)
    assert await call() == 0
    assert len(checks) == before + 1
