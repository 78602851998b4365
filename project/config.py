"""Reading the environment into settings, with one clear error per mistake.

Every problem raises :class:`ConfigError`; ``manage.py`` and ``project.asgi`` turn it
into a single ``error: ...`` line on standard error instead of a traceback.
"""

from __future__ import annotations

import math
import os
import socket
import time
import zoneinfo
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


# The database, checked at process start: the first query of a worker or of a
# request would otherwise fail with a traceback, or a page with a 500.

#: The app whose tables workers and pages cannot do without.
LIBRARY_APP = "retrying_consumers"


def check_database() -> None:
    """Raise ConfigError unless the default database answers and has the
    library's migrations applied and its tables present.

    Run at the start of ``runworker`` and at the ASGI import; ``manage.py
    migrate`` needs no such check, it is the fix.
    """
    # On a thread of its own: some ASGI servers (uvicorn) import the
    # application inside their event loop, where Django refuses blocking
    # database calls. The thread's connection is closed when it is done.
    with ThreadPoolExecutor(max_workers=1) as pool:
        problem = pool.submit(_database_check).result()
    if problem is not None:
        raise ConfigError(problem)


def _database_check() -> str | None:
    from django.db import connection

    try:
        return database_problem() or _migration_problem()
    finally:
        connection.close()


def database_problem() -> str | None:
    """Why the default database cannot be used at all, as one sentence: its
    SQLite folder is missing or it does not answer. None when it answers."""
    from django.db import OperationalError, connection

    conf = connection.settings_dict
    folder = _missing_sqlite_folder(conf)
    if folder is not None:
        return (
            f"the SQLite database {conf['NAME']} is in a folder that does not "
            f"exist: {folder}; create the folder or change DATABASE_URL"
        )
    try:
        connection.ensure_connection()
    except OperationalError as err:
        if connection.vendor == "sqlite":
            return (
                f"cannot open the SQLite database {conf['NAME']} ({_reason(err)}); "
                "check DATABASE_URL and the folder's permissions"
            )
        return (
            f"cannot connect to the database {_where(conf)} ({_reason(err)}); "
            "check DATABASE_URL and that the database server is running"
        )
    return None


def _migration_problem() -> str | None:
    from django.apps import apps
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    label = apps.get_app_config(LIBRARY_APP).label
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    missing = sorted(
        name
        for app, name in loader.graph.nodes
        if app == label and (app, name) not in loader.applied_migrations
    )
    where = _where(connection.settings_dict)
    if missing:
        what = (
            f"migration {label}.{missing[0]} is not applied"
            if len(missing) == 1
            else f"{len(missing)} migrations of {label} are not applied, "
            f"from {missing[0]}"
        )
        return f"the database {where} is not migrated ({what}); run manage.py migrate"
    return _table_problem(label, where)


def _table_problem(label: str, where: str) -> str | None:
    from django.apps import apps
    from django.db import connection

    tables = set(connection.introspection.table_names())
    absent = sorted(
        model._meta.db_table
        for model in apps.get_app_config(label).get_models()
        if model._meta.managed and model._meta.db_table not in tables
    )
    if not absent:
        return None
    return (
        f"the database {where} has no table {absent[0]} although the migrations "
        f"of {label} are recorded as applied; restore it, or drop {label}'s "
        f"tables and run manage.py migrate {label} zero --fake, then manage.py "
        "migrate"
    )


def _missing_sqlite_folder(conf: dict[str, object]) -> Path | None:
    name = str(conf.get("NAME") or "")
    if not str(conf.get("ENGINE", "")).endswith("sqlite3"):
        return None
    if name == ":memory:" or name.startswith("file:"):
        return None
    folder = Path(name).parent
    return None if folder.is_dir() else folder


def _where(conf: dict[str, object]) -> str:
    """The database as people name it: a file, or a name on a host; no password."""
    if str(conf.get("ENGINE", "")).endswith("sqlite3"):
        return str(conf.get("NAME"))
    host = conf.get("HOST") or "the local socket"
    port = f":{conf['PORT']}" if conf.get("PORT") else ""
    return f"{conf.get('NAME')!r} at {host}{port}"


def _reason(err: Exception) -> str:
    # psycopg: 'connection failed: connection to server at "h", port 1 failed:
    # Connection refused' and a hint on the next line; keep what went wrong.
    first = " ".join(str(err).split("\n", 1)[0].split())
    return first.rsplit(" failed: ", 1)[-1].removeprefix("FATAL: ")
