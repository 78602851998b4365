"""Reading the environment into settings, with one clear error per mistake.

Every problem raises :class:`ConfigError`; ``manage.py`` and ``project.asgi`` turn it
into a single ``error: ...`` line on standard error instead of a traceback.
"""

from __future__ import annotations

import math
import os
import zoneinfo
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from retrying_consumers.running.startup import (
    StartupError,
    check_database,
    database_problem,
    wait_for_redis,
)

__all__ = [
    "RUN_REDIS_FILE",
    "ConfigError",
    "check_database",
    "data_dir",
    "database_problem",
    "env_bool",
    "env_choice",
    "env_int",
    "env_list",
    "env_number",
    "env_time_zone",
    "redis_url",
    "validate_redis_url",
    "wait_for_redis",
]

TRUE_WORDS = {"1", "true", "yes", "on"}

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: In DATA_DIR while ``make run`` runs: its private Redis's URL, then its pid.
RUN_REDIS_FILE = "redis.url"
FALSE_WORDS = {"0", "false", "no", "off", ""}


# One error for every start-up problem, the environment's and the library's
# (an unreachable Redis, an unmigrated database): every entry point turns it
# into the same one line.
ConfigError = StartupError


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


def env_number(
    name: str, default: float, *, minimum: float = 0, maximum: float = math.inf
) -> float:
    """Read a finite number from ``minimum`` to ``maximum``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    expected = _expected("a number", minimum, maximum)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; {expected}") from None
    # NaN and infinities parse, but wait forever or crash int() later.
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number; {expected}")
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r} is out of range; {expected}")
    return value


def env_int(
    name: str, default: int, *, minimum: int = 0, maximum: float = math.inf
) -> int:
    """Read a whole number from ``minimum`` to ``maximum``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    expected = _expected("a whole number", minimum, maximum)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; {expected}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r} is out of range; {expected}")
    return value


def _expected(kind: str, minimum: float, maximum: float) -> str:
    if math.isinf(maximum):
        return f"expected {kind} of at least {minimum:g}"
    return f"expected {kind} from {minimum:g} to {maximum:g}"


def env_choice(name: str, default: str, choices: Sequence[str], what: str) -> str:
    """Read one of ``choices``, in any case; return it as spelled in ``choices``."""
    raw = os.environ.get(name, default)
    by_word = {choice.lower(): choice for choice in choices}
    choice = by_word.get(raw.strip().lower())
    if choice is None:
        words = f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise ConfigError(f"{name}={raw!r} is not {what}; use {words}")
    return choice


def env_time_zone(name: str, default: str) -> str:
    """Read the name of a time zone that this machine knows."""
    raw = os.environ.get(name, default)
    try:
        zoneinfo.ZoneInfo(raw)
    except (ValueError, KeyError, OSError):
        raise ConfigError(
            f"{name}={raw!r} is not a time zone; use a name such as UTC or Europe/Paris"
        ) from None
    return raw


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


def redis_url(folder: Path) -> str:
    """``REDIS_URL``; unset, the Redis of the ``make run`` using ``folder``, if
    one is running, else the local default.

    ``make run`` starts a Redis on a free port and writes its URL to
    ``folder / RUN_REDIS_FILE`` while it runs, so that a ``manage.py shell``
    beside it rings the same Redis as its workers. Only the file is read (no
    connection is made): a file whose ``make run`` is gone (it crashed) is
    ignored.
    """
    url = os.environ.get("REDIS_URL")
    if url is None:
        url = running_redis_url(folder / RUN_REDIS_FILE) or DEFAULT_REDIS_URL
    return validate_redis_url(url)


def running_redis_url(path: Path) -> str | None:
    """The URL in ``path`` (written by ``make run``) if its process is alive."""
    try:
        url, pid = path.read_text().split()
        alive = process_alive(int(pid))
    except (OSError, ValueError):  # absent, being written, or not ours
        return None
    return url if alive else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True


def data_dir(base_dir: Path, *parts: str) -> Path:
    """The folder for local state (SQLite database), or one inside it, created on
    demand."""
    path = Path(os.environ.get("DATA_DIR", base_dir / "data")).resolve()
    path = path.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"DATA_DIR: cannot make the folder {path} ({err.strerror}); "
            "set DATA_DIR to a folder this user may write"
        ) from None
    return path
