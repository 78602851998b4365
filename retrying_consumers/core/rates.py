"""Rates of task starts, as policies write them: ``"10/s"``, ``"30/m"``, ``"5/10s"``."""

from __future__ import annotations

import math
import re

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh])\s*")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/s"`` -> (10, 1.0): starts allowed per period of seconds.

    Raises ``ValueError`` for anything else.
    """
    found = rate_or_none(text)
    if found is None:
        raise ValueError(f'a rate is "N/s", "N/m", "N/h" or "N/10s", not {text!r}')
    return found


def rate_or_none(text: object) -> tuple[int, float] | None:
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    count, multiple, unit = match.groups()
    try:
        period = (float(multiple) if multiple else 1.0) * _UNIT_SECONDS[unit]
    except ValueError:
        return None
    if int(count) < 1 or not 0 < period < math.inf:
        return None
    return int(count), period
