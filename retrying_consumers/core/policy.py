"""Retry policies: what happens after an attempt of a background task fails.

A :class:`RetryPolicy` is assembled from tenacity's strategy objects (``stop``,
``wait`` and ``retry``, which compose with ``|``, ``&`` and ``+``). The task store
only keeps wall-clock times, so :meth:`RetryPolicy.decide` rebuilds a tenacity
``RetryCallState`` from an :class:`AttemptState` and lets the strategies judge it.

This module imports neither Django nor Channels.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from tenacity import (
    Future,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)
from tenacity.retry import RetryBaseT
from tenacity.stop import StopBaseT, stop_after_attempt, stop_any, stop_base
from tenacity.wait import WaitBaseT

from .exceptions import (
    AttemptInterrupted,
    AttemptTimedOut,
    GiveUp,
    InvalidPolicy,
    RetryLater,
    WorkerLost,
)
from .hints import is_number
from .hints import retry_after_hint as retry_after_hint
from .rates import parse_rate as parse_rate
from .rates import rate_or_none

#: 10 s, 20 s, 40 s, ... capped at 600 s, plus 0-10 s of jitter so that a burst of
#: failures does not retry in lock-step.
DEFAULT_WAIT: WaitBaseT = wait_exponential(multiplier=10, exp_base=2, max=600) + (
    wait_random(0, 10)
)

#: For ``give_up_on=PROGRAMMING_ERRORS``. Not a default: a ``TypeError`` can come
#: from transient data just as well as from a bug.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    NameError,
    AttributeError,
    ImportError,
    SyntaxError,
    AssertionError,
    NotImplementedError,
)


#: Failures retried whatever the ``retry`` predicate says (``give_up_on`` and
#: ``discard_on`` still apply): the handler asked for it, or the attempt, not
#: the work, failed.
ALWAYS_RETRIED: tuple[type[BaseException], ...] = (
    RetryLater,
    AttemptTimedOut,
    WorkerLost,
    AttemptInterrupted,
)


#: The most attempts a policy may allow (the store's columns hold far more,
#: and re-driving a dead task adds to them).
MAX_ATTEMPTS = 1_000_000


class Action(enum.StrEnum):
    """What to do with a task whose attempt has failed."""

    RETRY = "retry"
    GIVE_UP = "give_up"  # the task ends "dead"
    DISCARD = "discard"  # the task ends "cancelled", quietly


@dataclass(frozen=True, slots=True)
class AttemptState:
    """What the store knows when an attempt has failed.

    ``attempt`` is the 1-based number of the attempt that just failed, counted
    within the current drive; ``first_started_at`` is when attempt 1 of this drive
    started and ``now`` when the failure is being decided (both aware datetimes);
    ``idle_for`` is the seconds already spent waiting between attempts.
    """

    attempt: int
    first_started_at: datetime
    now: datetime
    idle_for: float = 0.0

    def __post_init__(self) -> None:
        """Reject states that tenacity's strategies could not judge."""
        if not (type(self.attempt) is int and self.attempt >= 1):
            raise ValueError(f"attempt must be an int >= 1, got {self.attempt!r}")
        for name in ("first_started_at", "now"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} must be an aware datetime")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`RetryPolicy.decide`.

    ``delay`` is the seconds to wait before the next attempt, set only for
    :attr:`Action.RETRY`.
    """

    action: Action
    delay: float | None
    reason: str

    @property
    def retry(self) -> bool:
        """Whether another attempt should be made."""
        return self.action is Action.RETRY

    def next_attempt_at(self, now: datetime) -> datetime | None:
        """When the next attempt is due, counting from ``now``; None if none is."""
        if self.delay is None:
            return None
        return now + timedelta(seconds=self.delay)


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _is_exception_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(item, type) and issubclass(item, BaseException) for item in value
    )


def _give_up(reason: str) -> Decision:
    return Decision(Action.GIVE_UP, None, reason)


_EXCEPTIONS = "must be a tuple of exception classes, e.g. (KeyError,)"
_CHECKS: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    (
        "max_attempts",
        "must be an int from 1 to 1000000",
        lambda v: type(v) is int and 1 <= v <= MAX_ATTEMPTS,
    ),
    ("wait", "must be a tenacity wait strategy", callable),
    ("stop", "must be None or a stop strategy", lambda v: v is None or callable(v)),
    ("retry", "must be a tenacity retry strategy", callable),
    ("give_up_on", _EXCEPTIONS, _is_exception_tuple),
    ("discard_on", _EXCEPTIONS, _is_exception_tuple),
    (
        "time_limit",
        "must be None or finite seconds > 0",
        lambda v: v is None or (is_number(v) and 0 < v < math.inf),
    ),
    (
        "max_running",
        "must be None or an int >= 1",
        lambda v: v is None or (type(v) is int and v >= 1),
    ),
    (
        "rate_limit",
        'must be None or "N/s", "N/m", "N/h" (or "N/10s"...), N >= 1',
        lambda v: v is None or rate_or_none(v) is not None,
    ),
    (
        "result_expires",
        "must be None or finite seconds > 0",
        lambda v: v is None or (is_number(v) and 0 < v < math.inf),
    ),
    ("honour_retry_after", "must be a bool", lambda v: isinstance(v, bool)),
    ("max_retry_after", "must be seconds >= 0", lambda v: is_number(v) and v >= 0),
)
_RETRY_ON_EXCEPTION = retry_if_exception_type(Exception)
_Delay = tuple[float, str]  # seconds, reason


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failed attempt is handled; :meth:`decide` checks, in this order:

    1. :class:`~retrying_consumers.exceptions.GiveUp` gives up.
    2. An instance of a ``discard_on`` class is discarded.
    3. An instance of a ``give_up_on`` class gives up.
    4. A failure that the ``retry`` predicate rejects gives up, except
       ``RetryLater`` and the failures of the attempt rather than of the work:
       ``AttemptTimedOut``, ``WorkerLost`` and ``AttemptInterrupted`` are
       retried whatever ``retry`` says (a narrow ``retry=`` such as
       ``retry_if_exception_type(ConnectionError)`` must not make one SIGKILL
       fatal); name them in ``give_up_on`` to give up on them instead.
    5. The delay is ``RetryLater.delay``, else a Retry-After hint found on the
       error (when ``honour_retry_after``; capped at ``max_retry_after``), else
       what the ``wait`` strategy says.
    6. The attempt gives up if it was attempt ``max_attempts`` (or later), or if
       ``stop`` says so, judged with the delay of step 5 as ``upcoming_sleep``.
    7. Otherwise it is retried after the delay.

    ``max_attempts`` counts executions, the first one included. ``time_limit`` is
    the seconds allowed per attempt; it is enforced by the worker.

    ``max_running`` and ``rate_limit`` ("10/s", "100/m", "5/10s") limit the
    attempts of one message type on one channel across every worker: at most
    that many at once, at most that many starts per period. A task over the
    limit waits in the store, holding no worker slot (see :mod:`.limits`).
    """

    max_attempts: int = 5
    wait: WaitBaseT = DEFAULT_WAIT
    stop: StopBaseT | None = None
    retry: RetryBaseT = _RETRY_ON_EXCEPTION
    give_up_on: tuple[type[BaseException], ...] = ()
    discard_on: tuple[type[BaseException], ...] = ()
    time_limit: float | None = 300.0
    max_running: int | None = None
    rate_limit: str | None = None
    result_expires: float | None = None
    honour_retry_after: bool = True
    max_retry_after: float = 3600.0

    def __post_init__(self) -> None:
        """Raise :class:`InvalidPolicy`, naming the field, for any bad argument."""
        for name, requirement, valid in _CHECKS:
            value = getattr(self, name)
            if not valid(value):
                raise InvalidPolicy(f"RetryPolicy.{name} {requirement}, got {value!r}")
        if both := set(self.give_up_on) & set(self.discard_on):
            names = ", ".join(sorted(cls.__name__ for cls in both))
            raise InvalidPolicy(f"RetryPolicy.give_up_on and discard_on share {names}")

    @property
    def stop_strategy(self) -> stop_base:
        """``stop_after_attempt(max_attempts)``, OR-ed with ``stop`` if set."""
        by_attempts = stop_after_attempt(self.max_attempts)
        if self.stop is None:
            return by_attempts
        # stop_any calls its members positionally, so a plain callable works too.
        return stop_any(by_attempts, cast(stop_base, self.stop))

    def with_options(self, **changes: Any) -> RetryPolicy:
        """Return a copy with ``changes`` applied, validated like a new policy."""
        names = {field.name for field in dataclasses.fields(self)}
        if unknown := sorted(set(changes) - names):
            raise InvalidPolicy(f"RetryPolicy has no option {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def decide(self, error: BaseException, state: AttemptState) -> Decision:
        """Decide what follows the failure ``error`` of attempt ``state.attempt``."""
        name = type(error).__name__
        if isinstance(error, GiveUp):
            message = str(error)
            return _give_up(f"GiveUp raised: {message}" if message else "GiveUp raised")
        if isinstance(error, self.discard_on):
            return Decision(Action.DISCARD, None, f"discarded ({name})")
        if isinstance(error, self.give_up_on):
            return _give_up(f"{name} is not retryable")
        call_state = self._call_state(error, state)
        if not isinstance(error, ALWAYS_RETRIED) and not self.retry(call_state):
            return _give_up(f"{name} is not retryable")
        delay, reason = self._delay(error, state.now, call_state)
        call_state.upcoming_sleep = delay
        if state.attempt >= self.max_attempts:
            return _give_up(
                f"attempts exhausted ({state.attempt} of {self.max_attempts})"
            )
        if self.stop is not None and self.stop(call_state):
            return _give_up("stop condition reached")
        return Decision(Action.RETRY, delay, reason)

    def _delay(self, error: BaseException, now: datetime, rs: RetryCallState) -> _Delay:
        if isinstance(error, RetryLater):
            return max(0.0, error.delay), f"RetryLater {_seconds(error.delay)} s"
        hint = retry_after_hint(error, now) if self.honour_retry_after else None
        if hint is not None:
            hint = min(hint, self.max_retry_after)
            return hint, f"Retry-After {_seconds(hint)} s"
        delay = float(self.wait(rs))
        # A custom wait may return NaN or a negative number; never sleep backwards.
        return (delay if delay > 0 else 0.0), "backoff"

    def _call_state(self, error: BaseException, state: AttemptState) -> RetryCallState:
        retrying = Retrying(stop=self.stop_strategy, wait=self.wait, retry=self.retry)
        call_state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        elapsed = (state.now - state.first_started_at).total_seconds()
        call_state.attempt_number = state.attempt
        # Times are relative to the first attempt; a clock that went backwards
        # must not make seconds_since_start negative.
        call_state.start_time = 0.0
        call_state.outcome_timestamp = max(0.0, elapsed)
        call_state.idle_for = state.idle_for
        call_state.outcome = Future.construct(state.attempt, error, True)
        return call_state


# Their names here before they moved to hints and rates.
_is_number = is_number
_rate_or_none = rate_or_none
