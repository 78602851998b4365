"""Turning configuration errors into one line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from django.core.exceptions import ImproperlyConfigured
from django.db.utils import OperationalError

from project.config import database_problem


def exit_on_bad_config[T](step: Callable[[], T]) -> T:
    """Run ``step``; on a configuration error print one line and exit with 2.

    A database error is one line too when the database cannot be used at all (a
    missing SQLite folder, a server that does not answer); any other is raised,
    with its traceback.
    """
    try:
        return step()
    except ImproperlyConfigured as err:
        fail(str(err))
    except OperationalError:
        problem = database_problem()
        if problem is None:
            raise
        fail(problem)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to standard error and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
