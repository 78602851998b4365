"""Waiting on conditions with deadlines, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async


def wait_until(
    condition: Callable[[], object], timeout: float = 15, what: str = "condition"
) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


async def until(
    check: Callable[[], Any],
    timeout: float = 10,
    what: str = "condition",
    own_thread: bool = False,
    in_loop: bool = False,
) -> Any:
    """Poll ``check`` (ORM code) until it returns something true; return that.

    ``check`` runs in Django's shared database thread, or with ``own_thread``
    in a pool thread, for looking while a sync handler holds the shared one,
    or with ``in_loop`` right in the event loop (for checks without the ORM).
    Fails after ``timeout`` seconds.
    """
    run = (
        sync_to_async(check, thread_sensitive=False)
        if own_thread
        else database_sync_to_async(check)
    )
    deadline = time.monotonic() + timeout
    while True:
        value = check() if in_loop else await run()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
