"""Consumers that the fault tests drive through real runworker processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from channels.consumer import AsyncConsumer, SyncConsumer
from channels.routing import ChannelNameRouter, ProtocolTypeRouter
from django.core.asgi import get_asgi_application
from tenacity import wait_fixed

from retrying_consumers import RetryMixin, RetryPolicy
from retrying_consumers.conf import worker_id

django_app = get_asgi_application()


class FaultConsumer(RetryMixin, AsyncConsumer):
    retry_policy = RetryPolicy(max_attempts=5, wait=wait_fixed(0.2))
    retry_policies = {
        "fault.hang": RetryPolicy(max_attempts=2, wait=wait_fixed(0.1), time_limit=1),
        "fault.limited": RetryPolicy(max_attempts=2, max_running=5),
        "fault.paced": RetryPolicy(max_attempts=2, rate_limit="5/s"),
    }

    async def fault_sleep(self, message: dict[str, Any]) -> str:
        await asyncio.sleep(message["payload"].get("seconds", 0.1))
        return worker_id()

    async def fault_noop(self, message: dict[str, Any]) -> str:
        return worker_id()

    async def fault_hang(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    async def fault_exit(self, message: dict[str, Any]) -> None:
        raise SystemExit(3)

    async def fault_limited(self, message: dict[str, Any]) -> str:
        await asyncio.sleep(message["payload"].get("seconds", 0.1))
        return worker_id()

    async def fault_paced(self, message: dict[str, Any]) -> str:
        return worker_id()

    async def fault_wait(self, message: dict[str, Any]) -> None:
        """Wait until cancelled; write when, to the payload's ``marker`` file."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            Path(message["payload"]["marker"]).write_text(repr(time.time()))
            raise


class FewAtOnceConsumer(FaultConsumer):
    worker_concurrency = 4


class SyncFaultConsumer(RetryMixin, SyncConsumer):
    retry_policy = RetryPolicy(max_attempts=2, wait=wait_fixed(0.1))

    def fault_block(self, message: dict[str, Any]) -> str:
        time.sleep(message["payload"].get("seconds", 0.1))
        return worker_id()

    def fault_exit(self, message: dict[str, Any]) -> None:
        raise SystemExit(3)

    def fault_cooperate(self, message: dict[str, Any]) -> str:
        """Work until the task is cancelled; write when, to ``marker``."""
        deadline = time.monotonic() + 3600
        while not self.task.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        Path(message["payload"]["marker"]).write_text(repr(time.time()))
        return "a result nobody records"


class PlainConsumer(AsyncConsumer):
    """A Channels consumer without RetryMixin, on a worker channel."""

    async def fault_noop(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(0)


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "channel": ChannelNameRouter(
            {
                "fault-a": FaultConsumer.as_asgi(),
                "fault-b": FaultConsumer.as_asgi(),
                "fault-few": FewAtOnceConsumer.as_asgi(),
                "fault-sync": SyncFaultConsumer.as_asgi(),
                "fault-plain": PlainConsumer.as_asgi(),
            }
        ),
    }
)
