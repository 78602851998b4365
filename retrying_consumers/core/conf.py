"""The library's settings, read from ``settings.RETRYING_CONSUMERS`` with defaults."""

from __future__ import annotations

import functools
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

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
    #: Attempts one runworker process runs at once (``--concurrency``); sync
    #: consumers run one at a time whatever this says (see worker_concurrency).
    worker_concurrency: int = 32
    #: Seconds the attempts in flight get after SIGTERM (``--grace-period``).
    grace_period: float = 30.0
    #: Seconds between two looks of a worker's scheduler at the store.
    scheduler_interval: float = 1.0
    #: Delete succeeded tasks this many seconds after they finished (None: keep).
    purge_succeeded_after: float | None = None
    #: Delete dead tasks this many seconds after they finished (None: keep).
    purge_dead_after: float | None = None
    #: Delete cancelled tasks this many seconds after they finished (None: keep).
    purge_cancelled_after: float | None = None
    #: Mail the site's ADMINS when tasks end dead (see ``notify``).
    notify_dead: bool = False
    #: At most one dead-task mail per process in this many seconds.
    notify_interval: float = 300.0
    #: Bearer token that may read ``/metrics`` (staff sessions always may).
    metrics_token: str | None = None
    #: Largest payload ``enqueue`` accepts, in bytes of its JSON text.
    max_payload_bytes: int = 1_048_576
    #: Refuse to enqueue to a channel that the ASGI application's ``channel``
    #: router does not route (off for producers that cannot load the routes).
    check_routes: bool = True
    #: Periodic tasks by name (see ``retrying_consumers.schedules``).
    schedules: Mapping[str, Mapping[str, Any]] | None = None

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
            _check_option(name, value)
        return cls(**values)


#: Options that are yes/no, text, or may be None (off); the others are numbers.
_FLAGS = frozenset({"store_results", "notify_dead", "check_routes"})
_TEXTS = frozenset({"metrics_token"})
_OPTIONAL = frozenset(
    {
        "purge_succeeded_after",
        "purge_dead_after",
        "purge_cancelled_after",
        "metrics_token",
        "schedules",
    }
)
#: Options whose value is a dict, checked by the module that reads it.
_MAPPINGS = frozenset({"schedules"})


#: Options that must be whole numbers (the others may be fractions).
_WHOLE = frozenset(f.name for f in fields(LibrarySettings) if f.type == "int")
#: The longest time an option may give, in seconds (100 years): a moment
#: further away does not fit a datetime.
_MAX_SECONDS = 100 * 365 * 86400


def _check_option(name: str, value: Any) -> None:
    """Raise ConfigurationError unless ``value`` suits option ``name``."""
    key = f"RETRYING_CONSUMERS[{name.upper()!r}]"
    if value is None and name in _OPTIONAL:
        return
    if name in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{key} must be a dict, not {value!r}")
    elif name in _FLAGS:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{key} must be True or False, not {value!r}")
    elif name in _TEXTS:
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{key} must be a non-empty string or None")
    else:
        _check_number(key, value, whole=name in _WHOLE)


def _check_number(key: str, value: Any, *, whole: bool) -> None:
    # bool is an int to Python, and NaN and infinities are floats.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{key} must be a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{key} must be a finite number, not {value!r}")
    if whole and not isinstance(value, int):
        raise ConfigurationError(f"{key} must be a whole number, not {value!r}")
    if value <= 0:
        raise ConfigurationError(f"{key} must be > 0, not {value!r}")
    if not whole and value > _MAX_SECONDS:
        raise ConfigurationError(
            f"{key} must be at most {_MAX_SECONDS} seconds (100 years), not {value!r}"
        )


@functools.cache
def library_settings() -> LibrarySettings:
    """The current settings, read once and again whenever Django's change."""
    return LibrarySettings.load()


@receiver(setting_changed)
def _reload(setting: str, **kwargs: Any) -> None:
    if setting == "RETRYING_CONSUMERS":
        library_settings.cache_clear()


def worker_id() -> str:
    """``host:pid``: who holds a lease, as shown to people."""
    return _worker_id(os.getpid())


@functools.cache
def _worker_id(pid: int) -> str:
    # Asked several times per task; keyed on the pid so a forked child differs.
    return f"{socket.gethostname()}:{pid}"
