"""How long a server asked a client to wait: ``Retry-After`` and its kin.

:func:`retry_after_hint` reads it from an exception; :class:`.policy.RetryPolicy`
and Django tasks' backoff wait that long before the next attempt.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import cast


def retry_after_hint(error: BaseException, now: datetime) -> float | None:
    """Seconds the server asked to wait before retrying, or None if it did not say.

    Looks at ``error.retry_after`` (seconds, ``timedelta``, aware ``datetime`` or
    header text), then a ``Retry-After`` header in ``error.headers`` and in
    ``error.response.headers``. A date in the past gives 0.0; a value that cannot
    be understood gives None. Never raises.
    """
    lookups = (
        lambda: getattr(error, "retry_after", None),
        lambda: _header(getattr(error, "headers", None)),
        lambda: _header(getattr(getattr(error, "response", None), "headers", None)),
    )
    for lookup in lookups:
        try:
            seconds = _to_seconds(lookup(), now)
        except Exception:  # a malformed hint must not turn into a second failure
            seconds = None
        if seconds is not None:
            return seconds
    return None


def _header(headers: object) -> object:
    get = getattr(headers, "get", None)
    if not callable(get):
        return None
    value = get("Retry-After")
    return get("retry-after") if value is None else value


def _to_seconds(value: object, now: datetime) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        value = _parse_header(value.strip())
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, datetime):
        # A naive value against an aware ``now`` raises TypeError: no hint.
        return max(0.0, (value - now).total_seconds())
    if is_number(value) and 0 <= cast(float, value) < math.inf:
        return float(cast(float, value))
    return None


def _parse_header(text: str) -> float | datetime:
    try:
        return float(text)
    except ValueError:
        moment = parsedate_to_datetime(text)
    # HTTP-dates are always GMT; "-0000" makes the email parser return a naive one.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
