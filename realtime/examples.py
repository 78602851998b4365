"""Example tasks for the dashboard and the tests.

The handlers stay thin and call plain functions, which are tested on their own
(treat tasks like views). Delivery is at-least-once, so each function is safe to
run twice with the same input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from channels.consumer import AsyncConsumer
from tenacity import wait_exponential, wait_random

from retrying_consumers import RetryMixin, RetryPolicy

EXAMPLES_CHANNEL = "examples"

#: The examples the dashboard can start: what they show, and their payload.
EXAMPLES: dict[str, dict[str, Any]] = {
    "flaky": {
        "label": "a task that fails once, then succeeds",
        "payload": {"fail_times": 1},
    },
    "doomed": {"label": "a task that always fails and ends dead", "payload": {}},
    "long": {"label": "a long task that reports progress", "payload": {"steps": 40}},
}

FLAKY_STEPS = ("connecting", "sending the request", "waiting for the answer")

ProgressFn = Callable[[float, float | None, str], None]


class TransientError(Exception):
    """A failure that goes away if you try again later (a flaky service)."""


class PermanentError(Exception):
    """A failure that no retry will fix."""


def flaky_step(attempt: int, fail_times: int) -> str:
    """Fail on the first ``fail_times`` attempts, then succeed."""
    if attempt <= fail_times:
        raise TransientError(f"service unavailable (attempt {attempt})")
    return f"succeeded on attempt {attempt}"


def doomed_step(attempt: int) -> None:
    """Always fail, as with a record that no longer exists upstream."""
    raise PermanentError(f"upstream rejected the request (attempt {attempt})")


async def long_job(steps: int, step_seconds: float, report: ProgressFn) -> int:
    """Work through ``steps`` steps, reporting progress after each."""
    for step in range(1, steps + 1):
        await asyncio.sleep(step_seconds)
        report(step, steps, f"step {step} of {steps}")
    return steps


def _int(payload: dict[str, Any], key: str, default: int, high: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError(f"payload[{key!r}] must be an int from 0 to {high}")
    return value


class ExampleTasksConsumer(RetryMixin, AsyncConsumer):
    """Serves the ``examples`` channel: ``example.flaky``, ``.doomed``, ``.long``."""

    # Short backoff so that a person watching the page sees retries happen.
    retry_policy = RetryPolicy(
        max_attempts=3,
        wait=wait_exponential(multiplier=2, max=30) + wait_random(0, 1),
        give_up_on=(ValueError,),
    )
    retry_policies = {
        "example.long": RetryPolicy(max_attempts=2, time_limit=600),
    }

    async def example_flaky(self, message: dict[str, Any]) -> str:
        """Fails ``payload["fail_times"]`` times (default 1), then succeeds."""
        fail_times = _int(message["payload"], "fail_times", 1, 10)
        for step, what in enumerate(FLAKY_STEPS, start=1):
            self.report_progress(step, len(FLAKY_STEPS) + 1, what)
            await asyncio.sleep(0.4)
        result = flaky_step(message["attempt"], fail_times)
        self.report_progress(len(FLAKY_STEPS) + 1, len(FLAKY_STEPS) + 1, "done")
        return result

    async def example_doomed(self, message: dict[str, Any]) -> None:
        """Fails on every attempt and ends dead."""
        doomed_step(message["attempt"])

    async def example_long(self, message: dict[str, Any]) -> int:
        """Reports progress over ``steps`` steps (default 20) of 0.25 s."""
        steps = _int(message["payload"], "steps", 20, 10_000)
        return await long_job(steps, 0.25, self.report_progress)
