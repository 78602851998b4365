"""Tests for retrying_consumers.policy: states are built by hand, nothing sleeps."""

from __future__ import annotations

import email.message
import math
import random
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import tenacity
from tenacity import (
    RetryCallState,
    retry_always,
    retry_if_exception,
    retry_if_exception_message,
    retry_if_exception_type,
    stop_after_delay,
    stop_before_delay,
    wait_chain,
    wait_exponential,
    wait_fixed,
)

from retrying_consumers.exceptions import (
    AttemptInterrupted,
    AttemptTimedOut,
    GiveUp,
    InvalidPolicy,
    RetryLater,
    WorkerLost,
)
from retrying_consumers.policy import (
    DEFAULT_WAIT,
    PROGRAMMING_ERRORS,
    Action,
    AttemptState,
    Decision,
    RetryPolicy,
    retry_after_hint,
)

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


def state(
    attempt: int = 1, elapsed: float = 0.0, idle_for: float = 0.0
) -> AttemptState:
    """The failure of ``attempt``, ``elapsed`` seconds after attempt 1 started."""
    return AttemptState(
        attempt=attempt,
        first_started_at=NOW - timedelta(seconds=elapsed),
        now=NOW,
        idle_for=idle_for,
    )


class HeadersError(Exception):
    """Like urllib's HTTPError: headers on the exception itself."""

    def __init__(self, headers: Any) -> None:
        super().__init__("server said no")
        self.headers = headers


class ResponseError(Exception):
    """Like requests' and httpx's HTTP errors: headers on ``.response``."""

    def __init__(self, headers: Any) -> None:
        super().__init__("server said no")
        self.response = SimpleNamespace(headers=headers)


class HintError(Exception):
    def __init__(self, retry_after: Any) -> None:
        super().__init__("slow down")
        self.retry_after = retry_after


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    # tenacity's wait_random draws from the module-level random.random().
    monkeypatch.setattr(random, "random", lambda: 0.0)


@pytest.fixture
def full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 1.0)


@pytest.fixture
def seeded() -> Iterator[None]:
    saved = random.getstate()
    random.seed(20151021)
    yield
    random.setstate(saved)


class Recorder:
    """A strategy that records the state it is called with and answers ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.states: list[RetryCallState] = []
        self.sleeps: list[float] = []
        self.elapsed: list[float | None] = []

    def __call__(self, retry_state: RetryCallState) -> Any:
        self.states.append(retry_state)
        self.sleeps.append(retry_state.upcoming_sleep)
        self.elapsed.append(retry_state.seconds_since_start)
        return self.answer


# Default backoff ----------------------------------------------------------------


@pytest.mark.usefixtures("no_jitter")
@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0), (6, 320.0), (7, 600.0), (50, 600.0)],
)
def test_default_wait_doubles_from_10_s_and_caps_at_600_s(
    attempt: int, expected: float
) -> None:
    decision = RetryPolicy(max_attempts=100).decide(ValueError(), state(attempt))
    assert decision == Decision(Action.RETRY, expected, "backoff")


@pytest.mark.usefixtures("full_jitter")
@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 20.0), (2, 30.0), (3, 50.0), (50, 610.0)]
)
def test_default_jitter_adds_at_most_10_s(attempt: int, expected: float) -> None:
    decision = RetryPolicy(max_attempts=100).decide(ValueError(), state(attempt))
    assert decision.delay == expected


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("attempt", "low", "high"), [(1, 10, 20), (2, 20, 30), (10, 600, 610)]
)
def test_default_jitter_stays_in_bounds_and_varies(
    attempt: int, low: float, high: float
) -> None:
    policy = RetryPolicy(max_attempts=100)
    delays = [policy.decide(OSError(), state(attempt)).delay for _ in range(500)]
    assert all(d is not None and low <= d <= high for d in delays)
    assert len(set(delays)) == len(delays)
    spread = [d for d in delays if d is not None]
    assert max(spread) - min(spread) > 9  # spread over the whole 10 s window
    assert low + 4 < sum(spread) / len(spread) < low + 6


def test_default_wait_is_a_tenacity_strategy() -> None:
    assert isinstance(DEFAULT_WAIT, tenacity.wait.wait_base)
    assert RetryPolicy().wait is DEFAULT_WAIT


# Attempt counting -----------------------------------------------------------------


def test_max_attempts_1_never_retries() -> None:
    decision = RetryPolicy(max_attempts=1).decide(OSError(), state(1))
    assert decision == Decision(Action.GIVE_UP, None, "attempts exhausted (1 of 1)")
    assert not decision.retry


def test_max_attempts_counts_executions_including_the_first() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.decide(OSError(), state(1)).action is Action.RETRY
    assert policy.decide(OSError(), state(2)).action is Action.RETRY
    last = policy.decide(OSError(), state(3))
    assert last == Decision(Action.GIVE_UP, None, "attempts exhausted (3 of 3)")


def test_default_policy_allows_five_attempts() -> None:
    policy = RetryPolicy()
    assert policy.decide(OSError(), state(4)).retry
    assert policy.decide(OSError(), state(5)).reason == "attempts exhausted (5 of 5)"


def test_attempt_beyond_max_attempts_gives_up() -> None:
    decision = RetryPolicy(max_attempts=3).decide(OSError(), state(7))
    assert decision == Decision(Action.GIVE_UP, None, "attempts exhausted (7 of 3)")


def test_stop_strategy_agrees_with_tenacity_itself() -> None:
    """Run a real tenacity loop with the policy's strategies, then ask decide."""
    policy = RetryPolicy(max_attempts=4, wait=wait_chain(wait_fixed(1), wait_fixed(7)))
    sleeps: list[float] = []
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    retrying = tenacity.Retrying(
        stop=policy.stop_strategy,
        wait=policy.wait,
        retry=policy.retry,
        sleep=sleeps.append,
        reraise=True,
    )
    with pytest.raises(OSError):
        retrying(flaky)
    decisions = [policy.decide(OSError(), state(n)) for n in range(1, calls + 1)]
    assert calls == 4
    assert [d.delay for d in decisions] == [*sleeps, None]
    assert sleeps == [1.0, 7.0, 7.0]


# Stop conditions judged on wall-clock times -------------------------------------------


def test_stop_after_delay_uses_time_since_first_attempt() -> None:
    policy = RetryPolicy(max_attempts=100, stop=stop_after_delay(3600))
    late = policy.decide(OSError(), state(2, elapsed=3600))
    assert late == Decision(Action.GIVE_UP, None, "stop condition reached")
    assert policy.decide(OSError(), state(2, elapsed=3599)).retry


def test_stop_after_delay_with_timedelta() -> None:
    policy = RetryPolicy(stop=stop_after_delay(timedelta(minutes=5)))
    assert policy.decide(OSError(), state(1, elapsed=301)).action is Action.GIVE_UP
    assert policy.decide(OSError(), state(1, elapsed=299)).action is Action.RETRY


def test_stop_before_delay_counts_the_upcoming_delay() -> None:
    short = RetryPolicy(wait=wait_fixed(5), stop=stop_before_delay(3600))
    long = short.with_options(wait=wait_fixed(15))
    assert short.decide(OSError(), state(2, elapsed=3590)) == Decision(
        Action.RETRY, 5.0, "backoff"
    )
    assert long.decide(OSError(), state(2, elapsed=3590)).reason == (
        "stop condition reached"
    )


def test_stop_before_delay_counts_a_retry_later_delay() -> None:
    policy = RetryPolicy(stop=stop_before_delay(100))
    assert policy.decide(RetryLater(9), state(1, elapsed=90)).retry
    assert not policy.decide(RetryLater(10), state(1, elapsed=90)).retry


def test_composed_stop_conditions() -> None:
    policy = RetryPolicy(
        max_attempts=100, stop=stop_after_delay(60) & stop_before_delay(1000)
    )
    # after 70 s the first holds but not the second: "&" needs both.
    assert policy.decide(OSError(), state(3, elapsed=70)).retry
    either = policy.with_options(stop=stop_after_delay(60) | stop_before_delay(1000))
    assert not either.decide(OSError(), state(3, elapsed=70)).retry


def test_attempt_exhaustion_is_reported_before_the_stop_condition() -> None:
    policy = RetryPolicy(max_attempts=2, stop=stop_after_delay(1))
    decision = policy.decide(OSError(), state(2, elapsed=10))
    assert decision.reason == "attempts exhausted (2 of 2)"


def test_plain_callable_stop_is_accepted() -> None:
    policy = RetryPolicy(stop=lambda rs: rs.idle_for >= 100)
    assert policy.decide(OSError(), state(2, idle_for=99)).retry
    assert not policy.decide(OSError(), state(2, idle_for=100)).retry


def call_state(attempt: int, elapsed: float) -> RetryCallState:
    rs = RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    rs.attempt_number, rs.start_time, rs.outcome_timestamp = attempt, 0.0, elapsed
    return rs


def test_stop_strategy_ors_max_attempts_with_stop() -> None:
    plain = RetryPolicy(max_attempts=3).stop_strategy
    assert [plain(call_state(n, 10_000)) for n in (1, 2, 3, 4)] == [
        False,
        False,
        True,
        True,
    ]
    timed = RetryPolicy(max_attempts=3, stop=stop_after_delay(10)).stop_strategy
    assert timed(call_state(1, 10)) is True
    assert timed(call_state(1, 9)) is False
    assert timed(call_state(3, 0)) is True


# The rebuilt RetryCallState ------------------------------------------------------


def test_rebuilt_state_carries_what_the_store_knows() -> None:
    error = OSError("down")
    wait, stop, retry = Recorder(12.5), Recorder(False), Recorder(True)
    policy = RetryPolicy(max_attempts=9, wait=wait, stop=stop, retry=retry)
    decision = policy.decide(error, state(4, elapsed=125.5, idle_for=70))
    assert decision == Decision(Action.RETRY, 12.5, "backoff")
    rs = wait.states[0]
    assert rs is stop.states[0] is retry.states[0]
    assert rs.attempt_number == 4
    assert rs.seconds_since_start == 125.5
    assert rs.idle_for == 70
    assert rs.outcome is not None
    assert rs.outcome.failed
    assert rs.outcome.exception() is error
    assert rs.outcome.attempt_number == 4
    assert isinstance(rs.retry_object, tenacity.Retrying)
    assert rs.retry_object.wait is wait
    assert retry.sleeps == [0.0]  # the predicate runs before any delay is known
    assert stop.sleeps == [12.5]  # the stop condition sees the upcoming delay
    assert stop.elapsed == [125.5]


def test_clock_going_backwards_clamps_elapsed_time_to_zero() -> None:
    stop = Recorder(False)
    skewed = AttemptState(2, first_started_at=NOW + timedelta(seconds=30), now=NOW)
    RetryPolicy(stop=stop).decide(OSError(), skewed)
    assert stop.elapsed == [0.0]


def test_elapsed_time_across_time_zones() -> None:
    stop = Recorder(False)
    paris = NOW.astimezone(ZoneInfo("Europe/Paris"))
    started = AttemptState(1, first_started_at=paris - timedelta(minutes=2), now=NOW)
    RetryPolicy(stop=stop).decide(OSError(), started)
    assert stop.elapsed == [120.0]


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 5.0), (4, 5.0), (9, 5.0)]
)
def test_wait_chain_picks_the_strategy_by_attempt(
    attempt: int, expected: float
) -> None:
    policy = RetryPolicy(
        max_attempts=10, wait=wait_chain(wait_fixed(1), wait_fixed(2), wait_fixed(5))
    )
    assert policy.decide(OSError(), state(attempt)).delay == expected


def test_combined_waits_add_up() -> None:
    policy = RetryPolicy(wait=wait_fixed(3) + wait_exponential(multiplier=2))
    assert [policy.decide(OSError(), state(n)).delay for n in (1, 2, 3)] == [
        5.0,
        7.0,
        11.0,
    ]


def test_negative_wait_is_clamped_to_zero() -> None:
    decision = RetryPolicy(wait=lambda rs: -4).decide(OSError(), state(1))
    assert decision == Decision(Action.RETRY, 0.0, "backoff")


# GiveUp, give_up_on, discard_on -----------------------------------------------


def test_give_up_ends_at_once() -> None:
    decision = RetryPolicy(retry=retry_always).decide(GiveUp(), state(1))
    assert decision == Decision(Action.GIVE_UP, None, "GiveUp raised")


def test_give_up_message_is_kept() -> None:
    decision = RetryPolicy().decide(GiveUp("order 7 is gone"), state(1))
    assert decision.reason == "GiveUp raised: order 7 is gone"


def test_give_up_wins_over_discard_on() -> None:
    decision = RetryPolicy(discard_on=(GiveUp,)).decide(GiveUp(), state(1))
    assert decision.action is Action.GIVE_UP


def test_give_up_on_ends_dead_with_attempts_left() -> None:
    policy = RetryPolicy(give_up_on=PROGRAMMING_ERRORS)
    decision = policy.decide(TypeError("bad"), state(1))
    assert decision == Decision(Action.GIVE_UP, None, "TypeError is not retryable")
    assert policy.decide(ModuleNotFoundError(), state(1)).action is Action.GIVE_UP
    assert policy.decide(OSError(), state(1)).action is Action.RETRY


def test_programming_errors_are_retried_by_default() -> None:
    assert TypeError in PROGRAMMING_ERRORS
    assert RetryPolicy().decide(TypeError(), state(1)).retry


def test_discard_on_ends_cancelled_even_on_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=2, discard_on=(KeyError,))
    for attempt in (1, 2):
        decision = policy.decide(KeyError("gone"), state(attempt))
        assert decision == Decision(Action.DISCARD, None, "discarded (KeyError)")
        assert decision.next_attempt_at(NOW) is None


def test_discard_on_matches_subclasses_and_beats_give_up_on() -> None:
    policy = RetryPolicy(discard_on=(LookupError,), give_up_on=(KeyError,))
    assert policy.decide(KeyError(), state(1)).reason == "discarded (KeyError)"
    assert policy.decide(IndexError(), state(1)).action is Action.DISCARD


# The retry predicate -----------------------------------------------------------


def test_retry_predicate_rejecting_gives_up() -> None:
    policy = RetryPolicy(retry=retry_if_exception_type(OSError))
    decision = policy.decide(ValueError("nope"), state(1))
    assert decision == Decision(Action.GIVE_UP, None, "ValueError is not retryable")
    assert policy.decide(ConnectionError(), state(1)).retry


def test_retry_if_exception_message() -> None:
    policy = RetryPolicy(retry=retry_if_exception_message(match="temporar"))
    assert policy.decide(RuntimeError("temporary glitch"), state(1)).retry
    assert not policy.decide(RuntimeError("disk full"), state(1)).retry


def test_retry_if_exception_predicate_and_composition() -> None:
    def server_side(error: BaseException) -> bool:
        return getattr(error, "status", 0) >= 500

    class HTTPStatusError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            self.status = status

    failing, refusing = HTTPStatusError(503), HTTPStatusError(404)
    policy = RetryPolicy(
        retry=retry_if_exception(server_side) | retry_if_exception_type(OSError)
    )
    assert policy.decide(failing, state(1)).retry
    assert policy.decide(OSError(), state(1)).retry
    rejected = policy.decide(refusing, state(1))
    assert rejected.reason == "HTTPStatusError is not retryable"


def test_default_predicate_rejects_base_exceptions() -> None:
    decision = RetryPolicy().decide(KeyboardInterrupt(), state(1))
    assert decision.reason == "KeyboardInterrupt is not retryable"


@pytest.mark.parametrize("error", [AttemptTimedOut("timed out"), WorkerLost()])
def test_timeouts_and_lost_workers_are_retried_by_default(error: Exception) -> None:
    assert RetryPolicy().decide(error, state(1)).retry


@pytest.mark.parametrize("value", [0, 1_000_001, 2**31, 10**20])
def test_max_attempts_outside_what_a_task_can_hold_is_refused(value: int) -> None:
    with pytest.raises(InvalidPolicy, match="from 1 to 1000000"):
        RetryPolicy(max_attempts=value)


ATTEMPT_FAILURES = [AttemptTimedOut(), WorkerLost(), AttemptInterrupted()]


@pytest.mark.parametrize("error", ATTEMPT_FAILURES, ids=lambda e: type(e).__name__)
def test_a_narrow_predicate_still_retries_failures_of_the_attempt(
    error: Exception,
) -> None:
    # Celery's autoretry_for=(ConnectionError,) translates to this predicate:
    # one SIGKILL or one slow attempt must not end the task.
    policy = RetryPolicy(retry=retry_if_exception_type(ConnectionError))
    assert policy.decide(error, state(1)).retry
    assert not policy.decide(ValueError("bad"), state(1)).retry


@pytest.mark.parametrize("error", ATTEMPT_FAILURES, ids=lambda e: type(e).__name__)
def test_failures_of_the_attempt_give_up_when_named(error: Exception) -> None:
    policy = RetryPolicy(give_up_on=(type(error),))
    decision = policy.decide(error, state(1))
    assert decision.action is Action.GIVE_UP
    assert decision.reason == f"{type(error).__name__} is not retryable"


@pytest.mark.parametrize("error", ATTEMPT_FAILURES, ids=lambda e: type(e).__name__)
def test_failures_of_the_attempt_still_use_up_attempts(error: Exception) -> None:
    policy = RetryPolicy(max_attempts=2, retry=retry_if_exception_type(OSError))
    decision = policy.decide(error, state(2))
    assert decision == Decision(Action.GIVE_UP, None, "attempts exhausted (2 of 2)")


def test_failures_of_the_attempt_are_exported() -> None:
    import retrying_consumers

    for error in ATTEMPT_FAILURES:
        assert getattr(retrying_consumers, type(error).__name__) is type(error)


# RetryLater ---------------------------------------------------------------------


def test_retry_later_delay_is_honoured() -> None:
    decision = RetryPolicy().decide(RetryLater(30), state(1))
    assert decision == Decision(Action.RETRY, 30.0, "RetryLater 30 s")


def test_retry_later_bypasses_the_predicate_and_retry_after() -> None:
    error = RetryLater(timedelta(seconds=2.5))
    error.retry_after = 999  # type: ignore[attr-defined]
    policy = RetryPolicy(retry=retry_if_exception_type(OSError))
    assert policy.decide(error, state(1)) == Decision(
        Action.RETRY, 2.5, "RetryLater 2.5 s"
    )


def test_retry_later_on_the_last_attempt_gives_up() -> None:
    decision = RetryPolicy(max_attempts=3).decide(RetryLater(30), state(3))
    assert decision == Decision(Action.GIVE_UP, None, "attempts exhausted (3 of 3)")


# Retry-After ---------------------------------------------------------------------


def test_retry_after_seconds_on_response_headers() -> None:
    error = ResponseError({"Retry-After": "120"})
    decision = RetryPolicy().decide(error, state(1))
    assert decision == Decision(Action.RETRY, 120.0, "Retry-After 120 s")


def test_retry_after_http_date() -> None:
    error = ResponseError({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert RetryPolicy().decide(error, state(1)).delay == 30.0


def test_retry_after_date_in_the_past_means_now() -> None:
    error = ResponseError({"Retry-After": "Wed, 21 Oct 2015 07:00:00 GMT"})
    assert retry_after_hint(error, NOW) == 0.0
    assert RetryPolicy().decide(error, state(1)) == Decision(
        Action.RETRY, 0.0, "Retry-After 0 s"
    )


@pytest.mark.usefixtures("no_jitter")
def test_garbage_retry_after_falls_back_to_backoff() -> None:
    error = ResponseError({"Retry-After": "whenever you like"})
    assert retry_after_hint(error, NOW) is None
    assert RetryPolicy().decide(error, state(2)) == Decision(
        Action.RETRY, 20.0, "backoff"
    )


def test_retry_after_on_urllib_http_error() -> None:
    headers = email.message.Message()
    headers["Retry-After"] = "45"
    error = urllib.error.HTTPError("https://example.com", 503, "busy", headers, None)
    assert RetryPolicy().decide(error, state(1)).delay == 45.0


def test_retry_after_on_exception_headers_mapping() -> None:
    assert RetryPolicy().decide(HeadersError({"Retry-After": "7"}), state(1)).delay == 7
    assert retry_after_hint(HeadersError({"retry-after": "8"}), NOW) == 8.0


def test_retry_after_is_capped_by_max_retry_after() -> None:
    error = ResponseError({"Retry-After": "7200"})
    assert RetryPolicy().decide(error, state(1)) == Decision(
        Action.RETRY, 3600.0, "Retry-After 3600 s"
    )
    assert RetryPolicy(max_retry_after=60).decide(error, state(1)).delay == 60.0


@pytest.mark.usefixtures("no_jitter")
def test_retry_after_ignored_when_not_honoured() -> None:
    policy = RetryPolicy(honour_retry_after=False)
    decision = policy.decide(ResponseError({"Retry-After": "120"}), state(1))
    assert decision == Decision(Action.RETRY, 10.0, "backoff")


def test_retry_after_on_the_last_attempt_gives_up() -> None:
    error = ResponseError({"Retry-After": "1"})
    assert RetryPolicy(max_attempts=2).decide(error, state(2)).action is Action.GIVE_UP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, 30.0),
        (1.5, 1.5),
        (0, 0.0),
        (timedelta(minutes=2), 120.0),
        (NOW + timedelta(seconds=90), 90.0),
        (NOW - timedelta(seconds=90), 0.0),
        ("60", 60.0),
        (" 60 ", 60.0),
        (b"60", 60.0),
        ("Wed, 21 Oct 2015 07:29:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:29:00 -0000", 60.0),
        (None, None),
        (True, None),
        (-5, None),
        ("-5", None),
        (math.nan, None),
        ("inf", None),
        ("", None),
        ("soon", None),
        (timedelta(seconds=-1), None),
        (NOW.replace(tzinfo=None), None),
        (object(), None),
    ],
)
def test_retry_after_attribute_values(value: Any, expected: float | None) -> None:
    assert retry_after_hint(HintError(value), NOW) == expected


def test_retry_after_attribute_comes_before_headers() -> None:
    error = HeadersError({"Retry-After": "10"})
    error.retry_after = 5  # type: ignore[attr-defined]
    assert retry_after_hint(error, NOW) == 5.0


def test_exception_headers_come_before_response_headers() -> None:
    error = HeadersError({"Retry-After": "10"})
    error.response = SimpleNamespace(headers={"Retry-After": "20"})  # type: ignore[attr-defined]
    assert retry_after_hint(error, NOW) == 10.0


def test_unusable_source_falls_through_to_the_next() -> None:
    error = ResponseError({"Retry-After": "20"})
    error.retry_after = "later"  # type: ignore[attr-defined]
    error.headers = "not a mapping"  # type: ignore[attr-defined]
    assert retry_after_hint(error, NOW) == 20.0


def test_retry_after_hint_never_raises() -> None:
    class Hostile(Exception):
        @property
        def retry_after(self) -> float:
            raise RuntimeError("property blew up")

        @property
        def response(self) -> Any:
            raise AttributeError("no response")

    class BadHeaders:
        def get(self, name: str) -> str:
            raise KeyError(name)

    assert retry_after_hint(Hostile(), NOW) is None
    assert retry_after_hint(HeadersError(BadHeaders()), NOW) is None
    assert retry_after_hint(ResponseError(None), NOW) is None
    assert (
        retry_after_hint(ResponseError({"Retry-After": "1"}), NOW.replace(tzinfo=None))
        == 1.0
    )
    naive_now = NOW.replace(tzinfo=None)
    assert retry_after_hint(HintError(NOW), naive_now) is None


def test_no_hint_at_all() -> None:
    assert retry_after_hint(ValueError("plain"), NOW) is None


# Validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"wait": 5}, "wait"),
        ({"wait": None}, "wait"),
        ({"stop": 3600}, "stop"),
        ({"retry": None}, "retry"),
        ({"give_up_on": KeyError}, "give_up_on"),
        ({"give_up_on": [KeyError]}, "give_up_on"),
        ({"give_up_on": (KeyError, 5)}, "give_up_on"),
        ({"give_up_on": (int,)}, "give_up_on"),
        ({"discard_on": KeyError}, "discard_on"),
        ({"discard_on": ("KeyError",)}, "discard_on"),
        ({"give_up_on": (KeyError,), "discard_on": (KeyError,)}, "discard_on"),
        ({"time_limit": 0}, "time_limit"),
        ({"time_limit": -1.0}, "time_limit"),
        ({"time_limit": math.inf}, "time_limit"),
        ({"time_limit": math.nan}, "time_limit"),
        ({"time_limit": "300"}, "time_limit"),
        ({"time_limit": True}, "time_limit"),
        ({"honour_retry_after": "yes"}, "honour_retry_after"),
        ({"honour_retry_after": 1}, "honour_retry_after"),
        ({"max_retry_after": -1}, "max_retry_after"),
        ({"max_retry_after": math.nan}, "max_retry_after"),
        ({"max_retry_after": None}, "max_retry_after"),
    ],
)
def test_invalid_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPolicy, match=field) as raised:
        RetryPolicy(**options)
    assert isinstance(raised.value, ValueError)


def test_single_exception_class_message_says_tuple() -> None:
    with pytest.raises(InvalidPolicy, match=r"tuple of exception classes"):
        RetryPolicy(give_up_on=KeyError)  # type: ignore[arg-type]


def test_overlap_names_both_fields_and_the_class() -> None:
    with pytest.raises(InvalidPolicy, match="give_up_on and discard_on share KeyError"):
        RetryPolicy(give_up_on=(KeyError, OSError), discard_on=(KeyError,))


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 1},
        {"time_limit": None},
        {"time_limit": 0.5},
        {"max_retry_after": 0},
        {"max_retry_after": math.inf},
        {"wait": lambda rs: 1.0, "stop": lambda rs: False, "retry": lambda rs: True},
        {"give_up_on": (LookupError,), "discard_on": (KeyError,)},
    ],
)
def test_valid_edge_options(options: dict[str, Any]) -> None:
    RetryPolicy(**options)


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]


def test_with_options_returns_a_revalidated_copy() -> None:
    base = RetryPolicy(max_attempts=3)
    more = base.with_options(max_attempts=8, time_limit=None)
    assert (more.max_attempts, more.time_limit) == (8, None)
    assert base.max_attempts == 3
    with pytest.raises(InvalidPolicy, match="max_attempts"):
        base.with_options(max_attempts=0)
    with pytest.raises(InvalidPolicy, match="discard_on"):
        RetryPolicy(give_up_on=(KeyError,)).with_options(discard_on=(KeyError,))
    with pytest.raises(InvalidPolicy, match="max_attemps"):
        base.with_options(max_attemps=4)


def test_policies_are_frozen_values() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert policy == RetryPolicy()
    assert hash(policy) == hash(RetryPolicy())


def test_attempt_state_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempt"):
        AttemptState(0, NOW, NOW)
    with pytest.raises(ValueError, match="attempt"):
        AttemptState(True, NOW, NOW)
    with pytest.raises(ValueError, match="first_started_at"):
        AttemptState(1, NOW.replace(tzinfo=None), NOW)
    with pytest.raises(ValueError, match="now"):
        AttemptState(1, NOW, NOW.replace(tzinfo=None))


# Decision -----------------------------------------------------------------------


def test_next_attempt_at_adds_the_delay() -> None:
    decision = Decision(Action.RETRY, 90.5, "backoff")
    assert decision.retry
    assert decision.next_attempt_at(NOW) == NOW + timedelta(seconds=90.5)


def test_next_attempt_at_is_none_when_not_retrying() -> None:
    for action in (Action.GIVE_UP, Action.DISCARD):
        decision = Decision(action, None, "x")
        assert not decision.retry
        assert decision.next_attempt_at(NOW) is None


def test_action_values_are_stable_strings() -> None:
    assert [str(a) for a in Action] == ["retry", "give_up", "discard"]
