"""The consumer instances of a worker: each fed one message at a time.

A channel's instances form a pool in :class:`~.worker.RetryingWorker`; an
instance that crashes is replaced, and its crash stops nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("retrying_consumers.worker")


class ConsumerInstance:
    """One consumer instance fed one message at a time."""

    def __init__(self, application: Any, channel: str) -> None:
        self.queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self.taken: asyncio.Future[None] | None = None
        self.pending = 0
        scope = {"type": "channel", "channel": channel}
        self.runner = asyncio.create_task(self._run(application, scope, channel))

    @property
    def idle(self) -> bool:
        return not self.runner.done() and self.pending == 0

    def submit(self, message: dict[str, Any]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending += 1
        self.queue.put_nowait((message, done))
        return done

    async def _run(self, application: Any, scope: dict[str, Any], channel: str) -> None:
        try:
            await application(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # SystemExit from a handler stops nothing
            if is_connection_error(err):
                # Its own reply channel lost Redis; the listener reconnects.
                logger.warning(
                    "consumer instance for channel %s lost the channel layer: %s",
                    channel,
                    err,
                )
            else:
                logger.exception("consumer instance for channel %s crashed", channel)
        finally:
            self._finish()
            while not self.queue.empty():  # submitted, never taken
                self.queue.get_nowait()[1].set_result(None)

    async def _receive(self) -> dict[str, Any]:
        # Asking for the next message means the one taken before is done.
        self._finish()
        message, self.taken = await self.queue.get()
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        logger.debug("worker consumers have no client to send to: %r", message)

    def _finish(self) -> None:
        if self.taken is not None and not self.taken.done():
            self.pending -= 1
            self.taken.set_result(None)


def is_connection_error(err: BaseException) -> bool:
    import redis.exceptions

    errors = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    return isinstance(err, errors)
