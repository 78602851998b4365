"""RetryMixin on websocket consumers: in-place retries, then an error frame."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from retrying_consumers import (
    RetryingAsyncJsonWebsocketConsumer,
    RetryingWebsocketConsumer,
)

attempts: dict[str, int] = {}


class JsonSocket(RetryingAsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        key = content["key"]
        attempts[key] = attempts.get(key, 0) + 1
        if content["fail"] >= attempts[key]:
            raise ConnectionError(f"flaky {attempts[key]}")
        await self.send_json({"ok": key, "attempts": attempts[key]})


class SyncSocket(RetryingWebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        if text_data == "boom":
            raise ValueError("sync boom")
        self.send(text_data=f"echo {text_data}")


class BrokenConnect(RetryingAsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        raise RuntimeError("cannot connect")


@pytest.fixture(autouse=True)
def _clear() -> None:
    attempts.clear()


async def open_socket(consumer: type) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/ws/test/")
    connected, _ = await comm.connect()
    assert connected
    return comm


async def test_transient_failure_is_retried_in_place() -> None:
    comm = await open_socket(JsonSocket)
    await comm.send_json_to({"key": "a", "fail": 1})
    assert await comm.receive_json_from(timeout=2) == {"ok": "a", "attempts": 2}
    await comm.disconnect()


async def test_persistent_failure_sends_an_error_frame_and_keeps_the_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    comm = await open_socket(JsonSocket)
    other = await open_socket(JsonSocket)
    await comm.send_json_to({"key": "b", "fail": 99})
    frame = await comm.receive_json_from(timeout=3)
    assert frame["type"] == "error"
    assert frame["code"] == "handler_failed"
    assert "ConnectionError" in frame["detail"]
    assert attempts["b"] == 3  # the in-place policy's max_attempts
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert failures[0].error_class == "ConnectionError"
    # The same connection, and another one, still work.
    await comm.send_json_to({"key": "c", "fail": 0})
    assert await comm.receive_json_from(timeout=2) == {"ok": "c", "attempts": 1}
    await other.send_json_to({"key": "d", "fail": 0})
    assert (await other.receive_json_from(timeout=2))["ok"] == "d"
    await comm.disconnect()
    await other.disconnect()


async def test_sync_websocket_consumer_error_frame() -> None:
    comm = await open_socket(SyncSocket)
    await comm.send_to(text_data="boom")
    frame = await comm.receive_json_from(timeout=3)
    assert frame["code"] == "handler_failed"
    await comm.send_to(text_data="hi")
    assert await comm.receive_from(timeout=2) == "echo hi"
    await comm.disconnect()


async def test_bad_json_frame_is_answered_not_fatal() -> None:
    comm = await open_socket(JsonSocket)
    await comm.send_to(text_data="{not json")
    frame = await comm.receive_json_from(timeout=3)
    assert frame["type"] == "error"
    await comm.send_json_to({"key": "e", "fail": 0})
    assert (await comm.receive_json_from(timeout=2))["ok"] == "e"
    await comm.disconnect()


async def test_failing_connect_closes_the_socket() -> None:
    comm = WebsocketCommunicator(BrokenConnect.as_asgi(), "/ws/test/")
    connected, _ = await comm.connect(timeout=3)
    assert not connected


async def test_unknown_message_type_gets_an_error_frame() -> None:
    comm = await open_socket(JsonSocket)
    await comm.send_input({"type": "no.such.event"})
    frame = await comm.receive_json_from(timeout=2)
    assert frame["code"] == "no_handler"
    await comm.disconnect()
