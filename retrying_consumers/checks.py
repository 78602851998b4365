"""System checks: settings that pass ``manage.py check`` but break the worker.

Registered when the app is ready (:func:`register`). Each mistake here went
unnoticed before: the wrong app order runs Channels' own ``runworker`` (no
retries, no scheduler, no lease recovery); a channels-redis host without
``socket_timeout: None`` under redis-py 8 crashes idle workers after 5 s; a
plain consumer on a worker channel gets no attempts at all. Plain consumers
are allowed, so that one is a warning (silence it with
``SILENCED_SYSTEM_CHECKS = ["retrying_consumers.W001"]``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.core.management import find_commands
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .running.startup import LIBRARY_APP, inspecting

TAG = "retrying_consumers"
#: The backend whose blocking pops race redis-py 8's socket timeout. The
#: pub/sub layer reads with its own 0.1 s timeout: idle for 14 s under
#: redis-py 8.1, it did not fail, so it is not checked.
REDIS_LAYER = "channels_redis.core.RedisChannelLayer"
#: How far :func:`consumer_class` looks through middleware (``inner``).
MAX_WRAPPERS = 10


def register() -> None:
    """Register the checks under the tag ``retrying_consumers`` (called when
    the app is ready; registering twice changes nothing)."""
    for check in (
        check_app_order,
        check_redis_socket_timeout,
        check_worker_consumers,
        check_schedules,
    ):
        checks.register(check, TAG)


def check_app_order(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E001: ``manage.py runworker`` must be the library's command.

    Django runs the command of the first app in ``INSTALLED_APPS`` that has
    one, so ``retrying_consumers`` must come before ``channels``.
    """
    owner = runworker_app()
    if owner in (None, LIBRARY_APP):
        return []
    return [
        checks.Error(
            f"manage.py runworker is the command of {owner!r}, not the "
            f"retrying worker: {owner!r} comes before {LIBRARY_APP!r} in "
            "INSTALLED_APPS, so workers run without retries, scheduler, "
            "lease recovery, worker registry, retention or --concurrency",
            hint=f"Put {LIBRARY_APP!r} before {owner!r} in INSTALLED_APPS "
            "(Django runs the command of the first app that has one).",
            id="retrying_consumers.E001",
        )
    ]


def check_schedules(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E004: every periodic task is declared well (cron, time zone, target)."""
    from .core.exceptions import ConfigurationError
    from .recurring.schedules import all_schedules

    try:
        all_schedules()
    except ConfigurationError as err:
        return [
            checks.Error(
                str(err),
                hint="See RETRYING_CONSUMERS['SCHEDULES'] and @periodic.",
                id="retrying_consumers.E004",
            )
        ]
    return []


def runworker_app() -> str | None:
    """The installed app whose ``runworker`` command Django runs, if any."""
    for config in apps.get_app_configs():
        if "runworker" in find_commands(os.path.join(config.path, "management")):
            return str(config.name)
    return None


def check_redis_socket_timeout(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E002: every channels-redis host sets ``socket_timeout: None`` (redis-py 8)."""
    version = redis_version()
    if version is None or int(version.split(".")[0]) < 8:
        return []
    errors: list[checks.CheckMessage] = []
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    for alias, layer in layers.items():
        if not _is_redis_layer(layer):
            continue
        for where, hint in _untimed_hosts(layer.get("CONFIG") or {}):
            errors.append(
                checks.Error(
                    f"CHANNEL_LAYERS[{alias!r}] {where} does not set "
                    f"socket_timeout to None: redis-py {version} times out "
                    "reads after 5 s, which races channels-redis's 5 s "
                    "blocking pop and crashes idle workers",
                    hint=hint,
                    id="retrying_consumers.E002",
                )
            )
    return errors


def redis_version() -> str | None:
    """The installed redis-py's version, or None if it is not installed."""
    try:
        return metadata.version("redis")
    except metadata.PackageNotFoundError:
        return None


def _is_redis_layer(layer: Any) -> bool:
    backend = layer.get("BACKEND") if isinstance(layer, Mapping) else None
    if not isinstance(backend, str):
        return False
    if backend == REDIS_LAYER:
        return True
    try:  # a subclass of it, under the project's own name
        found = import_string(backend)
        base = import_string(REDIS_LAYER)
    except ImportError:
        return False
    return isinstance(found, type) and issubclass(found, base)


def _untimed_hosts(config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, hint) for each host whose connections keep the 5 s timeout."""
    hosts = config.get("hosts")
    if not hosts:
        yield (
            "has no hosts (channels-redis then uses redis://localhost:6379)",
            'Set "hosts": [{"address": "redis://localhost:6379", '
            '"socket_timeout": None}].',
        )
        return
    if isinstance(hosts, str | bytes):
        return  # channels-redis refuses it with its own error
    for n, host in enumerate(hosts):
        hint = host_hint(host)
        if hint is not None:
            yield f"host {n}", hint


def host_hint(host: Any) -> str | None:
    """How to give ``host`` (one entry of ``hosts``) no socket timeout, or
    None when it has none already."""
    if isinstance(host, str | bytes):
        return (
            "A URL cannot set it: write the host as "
            '{"address": "<the URL>", "socket_timeout": None}.'
        )
    if isinstance(host, tuple | list):
        return (
            "Write the host as "
            '{"address": "redis://<host>:<port>", "socket_timeout": None}.'
        )
    if not isinstance(host, Mapping):
        return None
    address = host.get("address")
    if isinstance(address, str) and "socket_timeout" in parse_qs(
        urlsplit(address).query
    ):
        return (
            "Remove socket_timeout from the address URL: its query overrides "
            'the dict\'s "socket_timeout": None.'
        )
    if "socket_timeout" in host and host["socket_timeout"] is None:
        return None
    if "master_name" in host:
        return (
            'Add "socket_timeout": None beside "master_name" (it applies to '
            'the connections to the master; "sentinel_kwargs" only to the '
            "sentinels)."
        )
    return 'Add "socket_timeout": None to the host\'s dict.'


def check_worker_consumers(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E003 when ``ASGI_APPLICATION`` cannot be loaded; W001 for each worker
    channel routed to a consumer without ``RetryMixin``."""
    application, problem = load_application()
    if problem is not None:
        return [
            checks.Error(
                problem,
                hint="runworker and daphne load it too: fix ASGI_APPLICATION "
                "or the module it names.",
                id="retrying_consumers.E003",
            )
        ]
    from .running.mixin import RetryMixin

    warnings: list[checks.CheckMessage] = []
    for channel, app in sorted(channel_routes(application).items()):
        consumer = consumer_class(app)
        if consumer is None or issubclass(consumer, RetryMixin):
            continue
        name = f"{consumer.__module__}.{consumer.__qualname__}"
        warnings.append(
            checks.Warning(
                f"worker channel {channel!r} is routed to {name}, which has no "
                "RetryMixin: its messages get no attempts, retries, failure "
                "records or in-place retries",
                hint=f"Mix it in first (class {consumer.__name__}(RetryMixin, "
                "...)) or subclass RetryingAsyncConsumer / RetryingSyncConsumer; "
                "to keep a plain consumer, add 'retrying_consumers.W001' to "
                "SILENCED_SYSTEM_CHECKS.",
                obj=name,
                id="retrying_consumers.W001",
            )
        )
    return warnings


def load_application() -> tuple[Any, str | None]:
    """The ASGI application, or why it cannot be loaded (never raises).

    Start-up checks of the database that the module runs at import are
    skipped meanwhile (see :func:`~retrying_consumers.startup.inspecting`).
    """
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return None, "ASGI_APPLICATION is not set, so runworker has no consumers"
    try:
        with inspecting():
            return import_string(path), None
    except SystemExit as err:
        return None, (
            f"ASGI_APPLICATION {path!r} cannot be loaded: importing it exited "
            f"with status {err.code}"
        )
    except Exception as err:
        return None, (
            f"ASGI_APPLICATION {path!r} cannot be loaded: {type(err).__name__}: {err}"
        )


def channel_routes(application: Any) -> dict[str, Any]:
    """The ``channel`` router's mapping (a ChannelNameRouter's), or empty."""
    mapping = getattr(application, "application_mapping", None)
    if not isinstance(mapping, Mapping) or "channel" not in mapping:
        return {}
    routes = getattr(mapping["channel"], "application_mapping", None)
    return dict(routes) if isinstance(routes, Mapping) else {}


def consumer_class(app: Any) -> type | None:
    """The consumer class behind ``app`` (``X.as_asgi()``, maybe inside
    middleware), or None if it is some other ASGI application."""
    for _ in range(MAX_WRAPPERS):
        found = getattr(app, "consumer_class", None)
        if isinstance(found, type):
            return found
        app = getattr(app, "inner", None)
        if app is None:
            return None
    return None


@functools.cache
def routed_channels() -> frozenset[str] | None:
    """The channels that the ASGI application's ``channel`` router routes, or
    None when they are unknown: the application is not set or cannot be
    loaded, or has no ``ChannelNameRouter`` under ``channel``.

    Loaded once (as the checks load it, see :func:`load_application`) and
    again after ``ASGI_APPLICATION`` changes.
    """
    application, problem = load_application()
    if problem is not None:
        return None
    mapping = getattr(application, "application_mapping", None)
    if not isinstance(mapping, Mapping) or "channel" not in mapping:
        return None
    routes = getattr(mapping["channel"], "application_mapping", None)
    return frozenset(routes) if isinstance(routes, Mapping) else None


@receiver(setting_changed)
def _forget_routes(setting: str, **kwargs: Any) -> None:
    if setting == "ASGI_APPLICATION":
        routed_channels.cache_clear()
