"""The library's settings, read from ``settings.RETRYING_CONSUMERS`` with defaults."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings

from .exceptions import ConfigurationError


@dataclass(frozen=True, slots=True)
class LibrarySettings:
    """Every option of ``settings.RETRYING_CONSUMERS`` (seconds unless stated)."""

    #: How long a queued task may wait unclaimed before it is rung again.
    ring_timeout: float = 30.0
    #: How long a running attempt holds its task without a heartbeat.
    lease_seconds: float = 30.0
    #: How often progress events of one task may reach the channel layer.
    progress_interval: float = 0.1
    #: Total time that in-place retries of a websocket or plain handler may take.
    in_place_budget: float = 1.0
    #: Characters of traceback kept per failed attempt.
    traceback_limit: int = 16_000
    #: Store handler return values as task results (per consumer: store_results).
    store_results: bool = True
    #: Messages one runworker process runs at once (``--concurrency``).
    worker_concurrency: int = 4
    #: Seconds the attempts in flight get after SIGTERM (``--grace-period``).
    grace_period: float = 30.0
    #: Seconds between two looks of a worker's scheduler at the store.
    scheduler_interval: float = 1.0

    @classmethod
    def load(cls) -> LibrarySettings:
        raw: dict[str, Any] = dict(getattr(settings, "RETRYING_CONSUMERS", {}) or {})
        names = {f.name.upper(): f.name for f in fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigurationError(
                f"RETRYING_CONSUMERS has unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(names))}"
            )
        values = {names[key]: value for key, value in raw.items()}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                if name != "store_results":
                    raise ConfigurationError(
                        f"RETRYING_CONSUMERS[{name.upper()!r}] must be a number"
                    )
            elif value <= 0:
                raise ConfigurationError(
                    f"RETRYING_CONSUMERS[{name.upper()!r}] must be > 0"
                )
        return cls(**values)


def library_settings() -> LibrarySettings:
    """The current settings (read each time, so tests can override them)."""
    return LibrarySettings.load()


def worker_id() -> str:
    """``host:pid``: who holds a lease, as shown to people."""
    return f"{socket.gethostname()}:{os.getpid()}"
