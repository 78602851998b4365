"""Real daphne and runworker processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from project.devrun import BASE_DIR, free_port
from tests.waiting import wait_until

__all__ = ["wait_until"]  # re-exported: tests import it from here too


def database_url() -> str:
    """A DATABASE_URL for the test database that pytest-django created."""
    conf = connection.settings_dict
    if conf["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(conf['NAME']).resolve()}"
    user = conf.get("USER") or ""
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return (
        f"postgres://{auth}{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}"
        f"/{conf['NAME']}"
    )


def process_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: the test Redis and the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env["DJANGO_SETTINGS_MODULE"] = "project.settings"
    env.update(extra)
    return env


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Child:
    """A child process whose output goes to a log file shown on failure."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.alive():
            self.process.send_signal(signum)

    def stop(self, timeout: float = 10) -> int:
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        return self.process.returncode


@contextmanager
def running(children: list[Child]) -> Iterator[list[Child]]:
    """Stop every child at the end; print their logs if the block failed."""
    try:
        yield children
    except BaseException:
        for child in children:
            sys.stderr.write(f"----- {child.name} log -----\n{child.output()}\n")
        raise
    finally:
        for child in children:
            child.stop()


def start_daphne(env: dict[str, str], log_dir: Path) -> tuple[Child, int]:
    """Start daphne on a free port and wait until it accepts connections."""
    port = free_port()
    child = Child(
        "daphne",
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "project.asgi:application",
        ],
        env,
        log_dir,
    )
    try:
        wait_until(lambda: port_open(port) or not child.alive(), 20, "daphne to listen")
    except AssertionError:
        child.stop()
        raise AssertionError(f"daphne did not listen:\n{child.output()}") from None
    if not child.alive():
        raise AssertionError(f"daphne exited:\n{child.output()}")
    return child, port


def start_worker(
    env: dict[str, str], log_dir: Path, channels: list[str], name: str = "worker"
) -> Child:
    """Start ``manage.py runworker`` for ``channels``."""
    return Child(
        name, [sys.executable, "manage.py", "runworker", *channels], env, log_dir
    )


def start_workers(
    log_dir: Path, count: int, channels: list[str], settings_module: str, **env: str
) -> list[Child]:
    """Start ``count`` runworker processes and wait until they registered."""
    from retrying_consumers.models import WorkerRecord

    env = process_env(DJANGO_SETTINGS_MODULE=settings_module, **env)
    children = [
        start_worker(env, log_dir, channels, name=f"worker{n}")
        for n in range(1, count + 1)
    ]
    wait_until(
        lambda: (
            WorkerRecord.objects.count() >= count
            or not all(c.alive() for c in children)
        ),
        20,
        "workers to register",
    )
    assert all(c.alive() for c in children), [c.output() for c in children]
    return children
