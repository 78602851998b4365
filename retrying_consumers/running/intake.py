"""What a worker takes from the channel layer, and what it refuses.

Whatever arrives on a channel (any type, any body, empty or malformed batches)
either reaches a consumer or is logged once as poison and dropped; whatever
goes wrong while receiving is either a lost connection (wait and reconnect), an
undecodable message (poison: it was popped, nothing more to do), a
configuration error found at start-up (the worker stops with one line), or
anything else (logged, and the next receive waits, growing to a few seconds).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from ..core.exceptions import ConfigurationError
from ..messaging.doorbell import RINGS_TYPE
from .handlers import handler_name, is_handler

logger = logging.getLogger("retrying_consumers.worker")


def poison(channel: str, what: str, message: Any = None) -> None:
    """Log a dropped message once, at ERROR, with ``outcome=poison``."""
    task_id = message.get("task_id") if isinstance(message, dict) else None
    logger.error(
        "poison message dropped: channel=%s problem=%s task_id=%s",
        channel,
        what,
        task_id,
        extra={"channel": channel, "task_id": task_id, "outcome": "poison"},
    )


def usable_rings(channel: str, message: Any) -> list[Any]:
    """The messages that ``message`` carries: itself, or a batch's good rings.

    A batch that is empty, not a list, or holds entries that are not rings is
    logged once as poison; its good rings still run.
    """
    if not isinstance(message, dict) or message.get("type") != RINGS_TYPE:
        return [message]
    rings = message.get("rings")
    if not isinstance(rings, list) or not rings:
        poison(channel, "malformed batch of rings (no rings)", message)
        return []
    good = [ring for ring in rings if _is_ring(ring)]
    if len(good) < len(rings):
        bad = len(rings) - len(good)
        poison(channel, f"malformed batch of rings ({bad} of {len(rings)} bad)")
    return good


def _is_ring(ring: Any) -> bool:
    return (
        isinstance(ring, dict)
        and isinstance(ring.get("type"), str)
        and ring["type"] != RINGS_TYPE
        and "task_id" in ring
    )


def refusal(consumer_class: Any, message: dict[str, Any]) -> str | None:
    """Why a consumer that is not a RetryMixin one must not get ``message``.

    RetryMixin consumers judge their messages themselves (a task with no
    handler ends dead). For Channels' own consumers, a type that names no
    handler of the user's class (``"dispatch"``, ``"send"``, ``"_x"``) is
    refused here, before it can reach their machinery.
    """
    if consumer_class is None or hasattr(consumer_class, "decide_retry"):
        return None
    name = handler_name(message.get("type"))
    if name is None or not is_handler(consumer_class, name):
        return f"no handler for type {message.get('type')!r}"
    return None


def is_undecodable(error: BaseException) -> bool:
    """Whether a receive failed decoding a message it had already popped."""
    frames = traceback.extract_tb(error.__traceback__)
    if any(frame.name == "deserialize" for frame in frames):
        return True
    # channels-redis looks into the decoded body: a body that is not a dict.
    # Only these errors: an assertion of its own there must back off, not spin.
    return (
        isinstance(error, TypeError | KeyError | AttributeError)
        and bool(frames)
        and frames[-1].name == "receive_single"
    )


async def check_channel_layer(layer: Any) -> None:
    """Raise ConfigurationError if the layer's connection settings cannot work.

    Makes each host's connection (channels-redis builds its pool from the
    settings then); a host that is down is not an error here, the worker waits
    for it.
    """
    connection = getattr(layer, "connection", None)
    hosts = getattr(layer, "ring_size", 0)
    if not callable(connection) or not isinstance(hosts, int):
        return
    for index in range(hosts):
        try:
            connection(index)
        except Exception as err:
            raise ConfigurationError(
                f"CHANNEL_LAYERS: host {index} cannot be used: "
                f"{type(err).__name__}: {err}"
            ) from err
