"""Reading the environment into settings, with one clear error per mistake.

Every problem raises :class:`ConfigError`; ``manage.py`` and ``project.asgi`` turn it
into a single ``error: ...`` line on standard error instead of a traceback.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class ConfigError(ImproperlyConfigured):
    """The environment does not describe a runnable configuration."""


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no variable; anything but the usual words is an error."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (use 1 or 0)")


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_number(name: str, default: float, *, minimum: float = 0) -> float:
    """Read a number of at least ``minimum``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def validate_redis_url(url: str) -> str:
    """Return ``url`` if redis-py can connect with it, else raise ConfigError."""
    hint = "expected redis://[:password@]host:port/db, rediss://... or unix:///path"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the validation
    except ValueError as err:
        raise ConfigError(
            f"REDIS_URL={url!r} is not a valid URL ({err}); {hint}"
        ) from None
    if parts.scheme in {"redis", "rediss"}:
        if not parts.hostname:
            raise ConfigError(f"REDIS_URL={url!r} has no host; {hint}")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(f"REDIS_URL={url!r}: database {db!r} is not a number")
    elif parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"REDIS_URL={url!r} has no socket path; {hint}")
    else:
        raise ConfigError(f"REDIS_URL={url!r} has scheme {parts.scheme!r}; {hint}")
    return url


def wait_for_redis(url: str, timeout: float) -> None:
    """Wait until the Redis at ``url`` answers PING, or raise ConfigError.

    Used at process start so that an unreachable Redis is one clear line, and so
    that processes started together with their Redis wait for it briefly.
    """
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while True:
        try:
            _ping(parts.scheme, parts.hostname or "", parts.port or 6379, parts.path)
            return
        except OSError as err:
            last_error = err.strerror or str(err)
        if time.monotonic() >= deadline:
            shown = urlsplit(url)._replace(netloc=_without_password(parts.netloc))
            raise ConfigError(
                f"Redis at {shown.geturl()} is unreachable after {timeout:g} s "
                f"({last_error}); start it or set REDIS_URL"
            )
        time.sleep(0.2)


def _ping(scheme: str, host: str, port: int, path: str) -> None:
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(path)
    else:
        sock = socket.create_connection((host, port), timeout=2)
    with sock:
        if scheme == "rediss":
            return  # a TLS handshake is redis-py's job; the port answering is enough
        # A password-protected Redis answers NOAUTH, which still proves it is there.
        sock.sendall(b"PING\r\n")
        if not sock.recv(64):
            raise OSError("connection closed")


def _without_password(netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    return "***@" + netloc.rsplit("@", 1)[1]


def data_dir(base_dir: Path) -> Path:
    """The folder for local state (SQLite database), created on demand."""
    path = Path(os.environ.get("DATA_DIR", base_dir / "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
