"""Websocket consumer for the dashboard, and the worker consumer it talks to."""

from __future__ import annotations

import os
import socket
from typing import Any

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

PROTOCOL_VERSION = 1


def worker_identity() -> str:
    """``host:pid`` of this process, as shown to people."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RealtimeConsumer(AsyncJsonWebsocketConsumer):
    """The dashboard's websocket at ``/ws/tasks/``; see docs/websocket-protocol.md."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Refuses the handshake (HTTP 403): no session, no socket.
            await self.close()
            return
        await self.accept()
        await self.send_json(
            {"type": "hello", "protocol": PROTOCOL_VERSION, "user": user.get_username()}
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_error("bad_frame", "A frame must be a JSON object.")
            return
        action = content.get("action")
        if action == "ping":
            await self.channel_layer.send(
                PingWorkerConsumer.channel,
                {
                    "type": "ping.request",
                    "reply_channel": self.channel_name,
                    "id": str(content.get("id", "")),
                },
            )
            return
        await self.send_error("unknown_action", f"Unknown action {action!r}.")

    async def ping_reply(self, message: dict[str, Any]) -> None:
        """Called when a worker answers a ping: forwards it to the browser."""
        await self.send_json(
            {"type": "pong", "id": message["id"], "worker": message["worker"]}
        )

    async def send_error(self, code: str, detail: str) -> None:
        """Send an error frame; the connection stays open."""
        await self.send_json({"type": "error", "code": code, "detail": detail})


class PingWorkerConsumer(AsyncConsumer):
    """Answers pings on the ``realtime-ping`` worker channel.

    Lets a browser (and the end-to-end tests) check the whole path: websocket,
    channel layer, a ``runworker`` process and back.
    """

    channel = "realtime-ping"

    async def ping_request(self, message: dict[str, Any]) -> None:
        """Called for each ping: replies to the websocket that sent it."""
        await self.channel_layer.send(
            message["reply_channel"],
            {"type": "ping.reply", "id": message["id"], "worker": worker_identity()},
        )
