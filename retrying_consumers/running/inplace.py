"""Short in-place retries for websocket events and plain channel messages.

These messages have no task record, so a waiting retry cannot be stored: the
handler is retried on the spot while the total stays within ``IN_PLACE_BUDGET``
(1 s by default), then the failure is logged and a websocket client gets an error
frame. The connection, and every other one, stays up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from channels.db import aclose_old_connections, database_sync_to_async
from channels.exceptions import StopConsumer
from tenacity import wait_exponential

from ..core.conf import library_settings
from ..core.policy import PROGRAMMING_ERRORS, AttemptState, RetryPolicy
from .handlers import find_handler

logger = logging.getLogger("retrying_consumers.consumers")

#: 50 ms, then 100 ms, then give up. Bad input and programming errors are not
#: worth a second try.
IN_PLACE_POLICY = RetryPolicy(
    max_attempts=3,
    wait=wait_exponential(multiplier=0.05, max=0.4),
    give_up_on=(*PROGRAMMING_ERRORS, ValueError, LookupError),
    time_limit=None,
    honour_retry_after=False,
)


async def run_in_place(consumer: Any, message: dict[str, Any]) -> None:
    """Dispatch ``message`` to its handler, retrying quick failures in place."""
    kind = message.get("type")
    handler = find_handler(consumer, kind)
    consumer_name = type(consumer).__qualname__
    if handler is None:
        logger.error(
            "dead-lettered message with no handler: consumer=%s type=%r",
            consumer_name,
            kind,
            extra={"outcome": "dead_letter"},
        )
        await report_failure(
            consumer, message, "no_handler", f"No handler for {kind!r}."
        )
        return
    budget = library_settings().in_place_budget
    started, first_started_at = time.monotonic(), datetime.now(UTC)
    attempt = 1
    while True:
        try:
            await _call(consumer, handler, message)
            return
        except (StopConsumer, asyncio.CancelledError):
            raise
        except BaseException as err:  # SystemExit from a handler stops nothing
            state = AttemptState(attempt, first_started_at, datetime.now(UTC))
            decision = consumer.in_place_policy.decide(err, state)
            delay = decision.delay or 0.0
            error = f"{type(err).__qualname__}: {err}"
            if decision.retry and time.monotonic() - started + delay <= budget:
                logger.info(
                    "handler failed, retrying in place: consumer=%s type=%s "
                    "attempt=%s error=%s",
                    consumer_name,
                    kind,
                    attempt,
                    error,
                )
                await asyncio.sleep(delay)
                attempt += 1
                continue
            logger.error(
                "handler failed: consumer=%s type=%s attempt=%s error=%s gave_up=%s",
                consumer_name,
                kind,
                attempt,
                error,
                decision.reason,
                exc_info=err,
                extra={"error_class": type(err).__qualname__, "outcome": "give_up"},
            )
            detail = (
                f"The server could not handle this message ({type(err).__name__}); "
                "the error has been logged."
            )
            await report_failure(consumer, message, "handler_failed", detail)
            return


async def _call(consumer: Any, handler: Any, message: dict[str, Any]) -> None:
    if consumer._sync:
        await database_sync_to_async(handler)(message)
    else:
        await aclose_old_connections()
        await handler(message)


async def report_failure(
    consumer: Any, message: dict[str, Any], code: str, detail: str
) -> None:
    """Tell a websocket client its message failed; close a failed handshake."""
    if consumer.scope.get("type") != "websocket":
        return
    kind = message.get("type")
    if kind == "websocket.connect":
        await consumer._raw_send({"type": "websocket.close"})
    elif kind == "websocket.disconnect":
        raise StopConsumer()
    else:
        frame = json.dumps({"type": "error", "code": code, "detail": detail})
        await consumer._raw_send({"type": "websocket.send", "text": frame})
