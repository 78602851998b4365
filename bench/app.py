"""The ASGI application of bench processes: the project's websocket, and the
``bench`` worker channel served by :class:`BenchConsumer`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.consumer import AsyncConsumer  # noqa: E402
from channels.routing import (  # noqa: E402
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
)
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from tenacity import wait_fixed  # noqa: E402

from project.routing import WEBSOCKET_ROUTES  # noqa: E402
from realtime.tuning import tune_garbage_collector  # noqa: E402
from retrying_consumers import RetryMixin, RetryPolicy  # noqa: E402

GO_WAIT_LIMIT = 300.0  # seconds a progress task waits for the bench's "go"


class Flaky(Exception):
    """The planned failure of ``bench.flaky``."""


class BenchConsumer(RetryMixin, AsyncConsumer):
    """No-op and instrumented handlers for the scenarios."""

    retry_policies = {
        # Scenario "retry": fail twice, then succeed, 50 ms apart.
        "bench.flaky": RetryPolicy(max_attempts=5, wait=wait_fixed(0.05)),
    }

    async def bench_noop(self, message: dict[str, Any]) -> None:
        return None

    async def bench_stamp(self, message: dict[str, Any]) -> dict[str, float]:
        """Returns when it started (wall clock), stored as the task's result."""
        return {"started": time.time()}

    async def bench_flaky(self, message: dict[str, Any]) -> None:
        if message["attempt"] <= message["payload"].get("fail_times", 2):
            raise Flaky(f"planned failure of attempt {message['attempt']}")

    async def bench_progress(self, message: dict[str, Any]) -> None:
        """Waits for the bench's go, then reports ``rate`` times a second.

        Each report's message is the wall-clock time it was made, so a client can
        tell how old the progress it receives is.
        """
        payload = message["payload"]
        await _wait_for_go(payload["go_key"])
        rate, seconds = float(payload["rate"]), float(payload["seconds"])
        count = int(rate * seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1, count + 1):
            self.report_progress(i, count, repr(time.time()))
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))


async def _wait_for_go(key: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    try:
        deadline = time.monotonic() + GO_WAIT_LIMIT
        while not await client.exists(key):
            if time.monotonic() > deadline:
                raise TimeoutError("the bench never said go")
            await asyncio.sleep(0.005)
    finally:
        await client.aclose()


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(WEBSOCKET_ROUTES))
        ),
        "channel": ChannelNameRouter({"bench": BenchConsumer.as_asgi()}),
    }
)


def _log_full_collections() -> None:
    """BENCH_GC_LOG=1: one line on standard error per full collection."""
    import gc
    import sys

    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - started[0]) * 1000
        print(
            f"gc: full collection {took:.1f} ms, {info['collected']} collected, "
            f"{len(gc.get_objects(generation=2))} objects left in the oldest "
            f"generation, {gc.get_freeze_count()} frozen",
            file=sys.stderr,
            flush=True,
        )

    gc.callbacks.append(callback)


# As project/asgi.py does; BENCH_NO_GC_TUNING=1 leaves it out, for comparison.
if os.environ.get("BENCH_NO_GC_TUNING") != "1":
    tune_garbage_collector()
if os.environ.get("BENCH_GC_LOG") == "1":
    _log_full_collections()
