"""Start-up checks of a worker or an ASGI process: one line, not a traceback.

A process that cannot work (an unreachable Redis, a database that does not
answer or lacks the library's tables) should say so once, at start, in one
``error: ...`` line and exit with status 2, rather than fail its first task or
request with a traceback. :func:`check_database` and :func:`wait_for_redis`
raise :class:`StartupError`; :func:`fail` and :func:`exit_on_bad_config` print
the line. ``runworker`` uses them; a project's ``asgi.py`` and ``manage.py``
may too.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from ..core.exceptions import ConfigurationError

#: The app whose tables workers and pages cannot do without.
LIBRARY_APP = "retrying_consumers"

# Set while a system check imports the ASGI application to read its routes.
_inspecting: ContextVar[bool] = ContextVar("rc_inspecting", default=False)


class StartupError(ConfigurationError):
    """The process cannot start as configured; the message says why and what
    to do, in one sentence."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to standard error and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def exit_on_bad_config[T](step: Callable[[], T]) -> T:
    """Run ``step``; on a configuration error print one line and exit with 2.

    A database error is one line too when the database cannot be used at all (a
    missing SQLite folder, a server that does not answer); any other is raised,
    with its traceback.
    """
    from django.db.utils import OperationalError

    try:
        return step()
    except ImproperlyConfigured as err:
        fail(str(err))
    except OperationalError:
        problem = database_problem()
        if problem is None:
            raise
        fail(problem)


@contextmanager
def inspecting() -> Iterator[None]:
    """While inside, :func:`check_database` does nothing.

    For system checks that import the ASGI application to read its routes: a
    check must not touch the database (``migrate`` runs the checks before the
    tables exist), and an ``asgi.py`` that checks the database at import
    would otherwise stop ``manage.py check`` or ``migrate``.
    """
    token = _inspecting.set(True)
    try:
        yield
    finally:
        _inspecting.reset(token)


def wait_for_redis(url: str, timeout: float) -> None:
    """Wait until the Redis at ``url`` answers PING, or raise StartupError.

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
            raise StartupError(
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


def check_database() -> None:
    """Raise StartupError unless the default database answers and has the
    library's migrations applied and its tables present.

    Run at the start of ``runworker`` and at the ASGI import; ``manage.py
    migrate`` needs no such check, it is the fix. Does nothing while a system
    check reads the ASGI application (see :func:`inspecting`).
    """
    if _inspecting.get():
        return
    # On a thread of its own: some ASGI servers (uvicorn) import the
    # application inside their event loop, where Django refuses blocking
    # database calls. The thread's connection is closed when it is done.
    with ThreadPoolExecutor(max_workers=1) as pool:
        problem = pool.submit(_database_check).result()
    if problem is not None:
        raise StartupError(problem)


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
            f"from {label}.{missing[0]}"
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
