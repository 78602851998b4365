"""A real runworker outlives its database going away: the connection to
PostgreSQL runs through a proxy that the test cuts for a few seconds while
attempts run, longer than the attempts' leases."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection
from django.utils import timezone

from retrying_consumers import enqueue
from retrying_consumers.models import AttemptRecord, Status, TaskRecord
from tests.e2e.fault_settings import RETRYING_CONSUMERS
from tests.processes import database_url, running, start_workers, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Proxy:
    """A TCP proxy to ``target`` that can be cut: open connections are closed
    and new ones refused until it is mended."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shut(sock)

    def cut_off(self) -> None:
        self.cut.set()
        with self.lock:
            for sock in self.sockets:
                _shut(sock)
            self.sockets.clear()

    def mend(self) -> None:
        self.cut.clear()

    def close(self) -> None:
        self.server.close()
        self.cut_off()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return  # already closed


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    if connection.vendor != "postgresql":
        pytest.skip("a database server to lose is a PostgreSQL matter: SQLite has none")
    url = urlsplit(database_url())
    server = Proxy((url.hostname or "127.0.0.1", url.port or 5432))
    yield server
    server.close()


@pytest.fixture(autouse=True)
def short_rings(settings: Any, redis_client: Any) -> None:
    settings.RETRYING_CONSUMERS = RETRYING_CONSUMERS


def through(proxy: Proxy) -> str:
    url = urlsplit(database_url())
    auth = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
    return urlunsplit(url._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))


def test_a_worker_waits_out_a_database_outage_and_loses_nothing(
    tmp_path: Path, proxy: Proxy
) -> None:
    [worker] = start_workers(
        tmp_path,
        1,
        ["fault-a"],
        "tests.e2e.fault_settings",
        DATABASE_URL=through(proxy),
        DATABASE_CONN_MAX_AGE="60",
    )
    with running([worker]):
        ids = [enqueue("fault-a", "fault.sleep", {"seconds": 1.5}) for _ in range(8)]
        wait_until(
            lambda: TaskRecord.objects.filter(status=Status.RUNNING).count() == 8,
            20,
            "the attempts to start",
        )
        proxy.cut_off()
        # Longer than the attempts (1.5 s) and their leases (2 s): every outcome
        # is held while the store is away.
        wait_until(
            lambda: worker.output().count("store unavailable") >= 1, 10, "the outage"
        )
        # Mended once every lease has lapsed (nobody could renew them); the
        # attempts, shorter than their leases, have ended by then too.
        wait_until(
            lambda: (
                not TaskRecord.objects.filter(
                    pk__in=ids, lease_expires_at__gt=timezone.now()
                ).exists()
            ),
            20,
            "every lease to lapse",
        )
        proxy.mend()
        wait_until(
            lambda: (
                TaskRecord.objects.filter(pk__in=ids, status=Status.SUCCEEDED).count()
                == 8
            ),
            30,
            "every task to succeed",
        )
        wait_until(lambda: "store is back" in worker.output(), 10, "the end")
        assert worker.alive()
    # Each ran once: held outcomes were written, not taken back as lost.
    assert AttemptRecord.objects.filter(task_id__in=ids).count() == 8
    log = worker.output()
    assert log.count("store unavailable") == 1
    assert log.count("store is back") == 1
    assert "Traceback" not in log
