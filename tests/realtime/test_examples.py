"""The example tasks' policy, run with retrying_consumers.testing.perform."""

from __future__ import annotations

import pytest

from realtime.examples import EXAMPLES_CHANNEL, ExampleTasksConsumer
from retrying_consumers.testing import perform

pytestmark = pytest.mark.django_db(transaction=True)


def test_doomed_ends_dead_after_the_policys_three_attempts() -> None:
    outcome = perform(ExampleTasksConsumer, "example.doomed", channel=EXAMPLES_CHANNEL)
    assert (outcome.status, outcome.attempts) == ("dead", 3)
    assert outcome.error_class == "PermanentError"
    assert outcome.error_message == "upstream rejected the request (attempt 3)"


def test_a_bad_payload_is_not_retried() -> None:
    outcome = perform(ExampleTasksConsumer, "example.flaky", {"fail_times": "x"})
    assert (outcome.status, outcome.attempts, outcome.error_class) == (
        "dead",
        1,
        "ValueError",
    )
