"""The names a user imports from ``retrying_consumers`` itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import retrying_consumers
from retrying_consumers import (
    Action,
    AttemptState,
    Decision,
    IdempotencyConflict,
    InvalidArgument,
    RetryingConsumersError,
    RetryPolicy,
    retry_after_hint,
)

#: What docs/api.md promises users can import from the package.
PUBLIC = [
    "Action",
    "AttemptCancelled",
    "AttemptInterrupted",
    "AttemptState",
    "AttemptTimedOut",
    "Decision",
    "IdempotencyConflict",
    "InvalidArgument",
    "InvalidPayload",
    "RetryingConsumersError",
    "WorkerLost",
    "aenqueue",
    "aenqueue_group",
    "aenqueue_many",
    "enqueue",
    "enqueue_group",
    "enqueue_many",
    "is_cancelled",
    "retry_after_hint",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_the_name_is_exported_from_the_package(name: str) -> None:
    assert name in retrying_consumers.__all__
    assert getattr(retrying_consumers, name) is not None


def test_a_policy_is_unit_tested_from_the_package_alone() -> None:
    policy = RetryPolicy(max_attempts=3)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    state = AttemptState(
        attempt=2, first_started_at=started, now=started + timedelta(seconds=30)
    )
    decision = policy.decide(ConnectionError(), state)
    assert isinstance(decision, Decision)
    assert decision.action is Action.RETRY
    assert decision.delay is not None and decision.delay >= 20
    last = AttemptState(attempt=3, first_started_at=started, now=started)
    assert policy.decide(ConnectionError(), last).action is Action.GIVE_UP


def test_retry_after_hint_reads_a_servers_header_from_the_package() -> None:
    class Throttled(Exception):
        headers = {"Retry-After": "Thu, 01 Jan 2026 00:01:00 GMT"}

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_hint(Throttled(), now) == 60.0
    assert retry_after_hint(ValueError(), now) is None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        retrying_consumers.nothing  # noqa: B018


def test_the_errors_share_one_root_and_value_error() -> None:
    assert issubclass(IdempotencyConflict, InvalidArgument)
    assert issubclass(InvalidArgument, RetryingConsumersError)
    assert issubclass(IdempotencyConflict, ValueError)
