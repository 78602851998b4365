"""A real :class:`RetryingWorker` in a thread of the test process.

It serves its channels from the configured channel layer (a real one: see
the ``private_redis`` fixture) and uses the test database through
connections of its own, so the test needs ``django_db(transaction=True)``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from channels.layers import channel_layers

from ..checks import load_application
from ..running.worker import RetryingWorker, WorkerConfig


class _QuietWorker(RetryingWorker):
    def handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """A thread cannot handle signals: :meth:`ThreadedWorker.stop` stops it."""


class ThreadedWorker:
    """``RetryingWorker`` for ``channels``, started and stopped from a test."""

    def __init__(self, channels: Sequence[str], config: WorkerConfig | None = None):
        application, problem = load_application()
        if problem is not None:
            raise RuntimeError(problem)
        self.channels = list(channels)
        self.config = config or WorkerConfig(grace_period=5.0)
        self._application = application
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: RetryingWorker | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="task-worker", daemon=True
        )
        self.error: BaseException | None = None

    def start(self, timeout: float = 10) -> ThreadedWorker:
        """Start serving; returns once the worker runs."""
        self._thread.start()
        if not self._started.wait(timeout) or self.error is not None:
            raise RuntimeError(f"the task worker did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 15) -> None:
        """Stop gracefully, as on SIGTERM, and wait for the thread to end."""
        loop, worker = self._loop, self._worker
        if loop is not None and worker is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(worker.stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the task worker did not stop within {timeout:g} s")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:
            self.error = err
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        layer: Any = channel_layers.make_backend("default")
        self._worker = _QuietWorker(
            self._application, self.channels, layer, self.config
        )
        main = asyncio.create_task(self._worker.main())
        while not hasattr(self._worker, "stopping") and not main.done():
            await asyncio.sleep(0.01)
        self._started.set()
        await main
