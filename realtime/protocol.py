"""The dashboard's websocket protocol, version 1: parsing client frames.

Documented in docs/websocket-protocol.md. Every way a frame can be wrong maps to
an error code; the consumer answers with an error frame and keeps the socket.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16_384
MAX_TASK_IDS = 200
SCOPES = ("mine", "all")
#: Integer ids travel through msgpack to the ping worker: signed 64 bits.
MIN_INT_ID, MAX_INT_ID = -(2**63), 2**63 - 1
ACTIONS = ("subscribe", "unsubscribe", "ping")


class ProtocolError(Exception):
    """A client frame the server cannot act on; ``code`` goes in the error frame."""

    def __init__(self, code: str, detail: str, request_id: Any = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """One valid client frame."""

    action: str
    id: str | int | None = None
    scope: str | None = None
    tasks: tuple[uuid.UUID, ...] = field(default_factory=tuple)


def parse_frame(text: str | None, data: bytes | None) -> Request:
    """Turn a websocket frame into a :class:`Request`, or raise ProtocolError."""
    if data is not None:
        raise ProtocolError("binary_frame", "Frames must be JSON text, not binary.")
    if text is None:
        raise ProtocolError("empty_frame", "The frame was empty.")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"Frames may be at most {MAX_FRAME_BYTES} bytes."
        )
    try:
        content = json.loads(text)
    except ValueError:
        raise ProtocolError("invalid_json", "The frame is not valid JSON.") from None
    except RecursionError:
        raise ProtocolError("too_deep", "The frame is nested too deeply.") from None
    if not isinstance(content, dict):
        raise ProtocolError("bad_frame", "A frame must be a JSON object.")
    return parse_request(content)


def parse_request(content: dict[str, Any]) -> Request:
    """Check the fields of a decoded frame."""
    request_id = content.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int)
    ):
        raise ProtocolError("bad_field", "'id' must be a string or an integer.")
    if isinstance(request_id, int) and not MIN_INT_ID <= request_id <= MAX_INT_ID:
        raise ProtocolError("bad_field", "An integer 'id' must fit in 64 bits.")
    action = content.get("action")
    if action not in ACTIONS:
        raise ProtocolError(
            "unknown_action",
            f"Unknown action {action!r}; expected one of {', '.join(ACTIONS)}.",
            request_id,
        )
    if action == "ping":
        return Request("ping", request_id)
    scope, tasks = content.get("scope"), content.get("tasks")
    if (scope is None) == (tasks is None):
        raise ProtocolError(
            "bad_field", f"{action} needs either 'scope' or 'tasks'.", request_id
        )
    if scope is not None and scope not in SCOPES:
        raise ProtocolError(
            "bad_field", f"'scope' must be one of {', '.join(SCOPES)}.", request_id
        )
    return Request(action, request_id, scope, _task_ids(tasks, request_id))


def _task_ids(tasks: Any, request_id: Any) -> tuple[uuid.UUID, ...]:
    if tasks is None:
        return ()
    if not isinstance(tasks, list) or not tasks:
        raise ProtocolError(
            "bad_field", "'tasks' must be a non-empty list of task ids.", request_id
        )
    if len(tasks) > MAX_TASK_IDS:
        raise ProtocolError(
            "bad_field", f"At most {MAX_TASK_IDS} task ids per frame.", request_id
        )
    ids = []
    for item in tasks:
        try:
            ids.append(uuid.UUID(item))
        except (TypeError, ValueError, AttributeError):
            raise ProtocolError(
                "bad_field", f"{item!r} is not a task id.", request_id
            ) from None
    return tuple(dict.fromkeys(ids))


class FrameBudget:
    """A token bucket: at most ``rate`` frames a second, ``burst`` at once.

    Checked before a frame is parsed, so a flood costs the server a counter
    per frame, not a query. ``clock`` is injectable for tests.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.at = clock()

    def take(self) -> bool:
        """Spend one frame's token; False when none is left."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
