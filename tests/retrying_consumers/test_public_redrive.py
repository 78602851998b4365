"""docs/api.md's "attempt 2 of 6": a re-driven task counts attempts across
drives, its policy within the drive."""

from __future__ import annotations

import pytest
import redis

from retrying_consumers import Action, Decision, RetryPolicy, enqueue, retry_now, store
from retrying_consumers.models import Outcome, Status
from retrying_consumers.recording import task_policy
from retrying_consumers.store import Failure

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = RetryPolicy(max_attempts=5)
WORKER = "host:1"


def test_a_task_dead_at_attempt_1_re_driven_shows_attempt_2_of_6(
    redis_client: redis.Redis,
) -> None:
    task_id = enqueue("examples-test", "thumbnail.generate", {})
    first = store.claim(
        task_id, 1, worker=WORKER, lease_seconds=30, default_max_attempts=5
    )
    assert first is not None and (first.attempt, first.max_attempts) == (1, 5)
    dead = store.fail(
        task_id,
        1,
        worker=WORKER,
        failure=Failure(Outcome.FAILED, "GiveUp", "image was deleted"),
        decision=Decision(Action.GIVE_UP, None, "GiveUp raised"),
    )
    assert dead is not None and dead.status == Status.DEAD

    retry_now(task_id)
    second = store.claim(
        task_id, 2, worker=WORKER, lease_seconds=30, default_max_attempts=5
    )
    assert second is not None
    # What the page, the logs and the handler's message say: across drives.
    assert (second.attempt, second.max_attempts) == (2, 6)
    # What the policy judges: attempt 1 of a drive of five.
    state = store.attempt_state(second)
    policy = task_policy(POLICY, second)
    assert (state.attempt, policy.max_attempts) == (1, 5)
    assert policy.decide(ConnectionError(), state).action is Action.RETRY
