"""Turning configuration errors into one line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from django.core.exceptions import ImproperlyConfigured


def exit_on_bad_config[T](step: Callable[[], T]) -> T:
    """Run ``step``; on a configuration error print one line and exit with 2."""
    try:
        return step()
    except ImproperlyConfigured as err:
        fail(str(err))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to standard error and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
