"""The dashboard's websocket, and the worker consumer it pings.

Protocol (version 1) in docs/websocket-protocol.md. A user sees only their own
tasks; staff see all. Updates arrive on channel-layer groups (through the
process's hub, one group member per process: realtime/hub.py), are coalesced
per task for ``FLUSH_INTERVAL`` and sent in batches, so a chatty task or many tasks
at once cannot flood the browser; the final state of a task watched by id goes
out at once (at most one such early batch per ``FLUSH_INTERVAL``). Because
groups may drop messages, every subscribe answers with a snapshot read from the
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from realtime import queries
from realtime.hub import hub_for
from realtime.protocol import PROTOCOL_VERSION, ProtocolError, Request, parse_frame
from retrying_consumers import RetryingAsyncConsumer
from retrying_consumers.conf import worker_id
from retrying_consumers.events import ALL_TASKS_GROUP, task_group, user_group
from retrying_consumers.models import FINAL

FLUSH_INTERVAL = 0.1
STATS_INTERVAL = 2.0  # at least this often while subscribed to a scope
STATS_MIN_INTERVAL = 0.5  # at most this often, however busy


class RealtimeConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/tasks/``: subscribe to tasks, get snapshots and live updates."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # refuses the handshake: HTTP 403
            return
        self.user = user
        self.scopes: set[str] = set()
        self.task_ids: set[uuid.UUID] = set()
        self.pending: dict[str, dict[str, Any]] = {}
        self.flusher: asyncio.Task[None] | None = None
        self.last_flush = -FLUSH_INTERVAL
        self.flush_now = asyncio.Event()  # a watched task ended: no waiting
        self.last_early = -FLUSH_INTERVAL
        self.stats_loop: asyncio.Task[None] | None = None
        self.stats_due = asyncio.Event()
        await self.accept()
        await self.send_json(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "user": user.get_username(),
                "staff": bool(user.is_staff),
            }
        )

    async def disconnect(self, code: int) -> None:
        for job in (getattr(self, "flusher", None), getattr(self, "stats_loop", None)):
            if job is not None:
                job.cancel()
        hub = hub_for(self.channel_layer)
        for group in self._groups():
            await hub.leave(group, self)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        try:
            request = parse_frame(text_data, bytes_data)
            await self.handle(request)
        except ProtocolError as err:
            await self.send_error(err.code, err.detail, err.request_id)

    async def handle(self, request: Request) -> None:
        """Act on one valid client frame."""
        if request.action == "ping":
            await self.channel_layer.send(
                PingWorkerConsumer.channel,
                {
                    "type": "ping.request",
                    "reply_channel": self.channel_name,
                    "id": request.id,
                },
            )
        elif request.action == "subscribe":
            await self.subscribe(request)
        else:
            await self.unsubscribe(request)

    async def subscribe(self, request: Request) -> None:
        """Join the groups asked for and send a snapshot from the store."""
        if request.scope is not None:
            if request.scope == "all" and not self.user.is_staff:
                raise ProtocolError(
                    "forbidden", "Only staff may subscribe to all tasks.", request.id
                )
            self.scopes.add(request.scope)
            await hub_for(self.channel_layer).join(
                self._scope_group(request.scope), self
            )
            tasks = await database_sync_to_async(queries.snapshot)(
                self.user, request.scope
            )
            await self._send_snapshot(request, tasks)
            self._start_stats()
            return
        found = await database_sync_to_async(queries.tasks_by_id)(
            self.user, request.tasks
        )
        missing = [str(task_id) for task_id in request.tasks if task_id not in found]
        for task_id in found:
            self.task_ids.add(task_id)
            await hub_for(self.channel_layer).join(task_group(task_id), self)
        await self._send_snapshot(
            request, queries.task_events(found.values(), with_result=True)
        )
        if missing:
            # The same answer for unknown ids and other people's tasks.
            raise ProtocolError(
                "not_found",
                f"No such task, or not yours: {', '.join(missing)}.",
                request.id,
            )

    async def unsubscribe(self, request: Request) -> None:
        """Leave the groups named; unknown ones are ignored."""
        if request.scope is not None and request.scope in self.scopes:
            self.scopes.discard(request.scope)
            await hub_for(self.channel_layer).leave(
                self._scope_group(request.scope), self
            )
        for task_id in request.tasks:
            if task_id in self.task_ids:
                self.task_ids.discard(task_id)
                await hub_for(self.channel_layer).leave(task_group(task_id), self)
        await self.send_json({"type": "unsubscribed", "id": request.id})

    async def task_updates(self, event: dict[str, Any]) -> None:
        """Called by the process's hub for each batch of task events of a group
        this socket watches: queue them for the next ``update`` frame."""
        tasks = event.get("tasks")
        wanted = [
            task
            for task in (tasks if isinstance(tasks, list) else [])
            if isinstance(task, dict) and "id" in task and self._wants(task)
        ]
        for task in wanted:
            self.pending[task["id"]] = task  # only the latest state of a task
        if any(self._ends_a_watched_task(task) for task in wanted):
            self.flush_now.set()
        if wanted and (self.flusher is None or self.flusher.done()):
            self.flusher = asyncio.create_task(self._flush_soon())

    async def ping_reply(self, message: dict[str, Any]) -> None:
        """Called when a worker answers a ping: forwards it to the browser."""
        await self.send_json(
            {"type": "pong", "id": message["id"], "worker": message["worker"]}
        )

    async def send_error(self, code: str, detail: str, request_id: Any = None) -> None:
        """Send an error frame; the connection stays open."""
        await self.send_json(
            {"type": "error", "code": code, "detail": detail, "id": request_id}
        )

    def _wants(self, task: dict[str, Any]) -> bool:
        if "all" in self.scopes and self.user.is_staff:
            return True
        if "mine" in self.scopes and task.get("owner_id") == self.user.pk:
            return True
        return self._watched_by_id(task)

    def _watched_by_id(self, task: dict[str, Any]) -> bool:
        with contextlib.suppress(ValueError, TypeError):
            return uuid.UUID(task["id"]) in self.task_ids
        return False

    def _ends_a_watched_task(self, task: dict[str, Any]) -> bool:
        """True for the final state of a task this socket watches by id."""
        return task.get("status") in FINAL and self._watched_by_id(task)

    async def _flush_soon(self) -> None:
        # At once if the last batch left long enough ago, else when it may;
        # sooner when a task watched by id ends, but never two such early
        # batches within an interval. Until nothing is pending: events may
        # come while a batch is being sent.
        loop = asyncio.get_running_loop()
        while self.pending:
            due = self.last_flush + FLUSH_INTERVAL
            if loop.time() < due:
                if not self.flush_now.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.flush_now.wait(), due - loop.time())
                if self.flush_now.is_set():  # a watched task ended
                    soonest_early = self.last_early + FLUSH_INTERVAL
                    if loop.time() < min(due, soonest_early):
                        await asyncio.sleep(min(due, soonest_early) - loop.time())
                    if loop.time() < due:
                        self.last_early = loop.time()
            self.flush_now.clear()
            self.last_flush = loop.time()
            batch, self.pending = list(self.pending.values()), {}
            await self.send_json({"type": "update", "tasks": batch})
            self.stats_due.set()  # counters follow changes without waiting

    async def _send_snapshot(
        self, request: Request, tasks: list[dict[str, Any]]
    ) -> None:
        await self.send_json(
            {
                "type": "snapshot",
                "id": request.id,
                "scope": request.scope,
                "tasks": tasks,
            }
        )

    def _start_stats(self) -> None:
        if self.stats_loop is None or self.stats_loop.done():
            self.stats_loop = asyncio.create_task(self._send_stats())

    async def _send_stats(self) -> None:
        while self.scopes:
            scope = "all" if "all" in self.scopes else "mine"
            stats = await database_sync_to_async(queries.stats)(self.user, scope)
            await self.send_json({"type": "stats", "scope": scope, **stats})
            self.stats_due.clear()
            await asyncio.sleep(STATS_MIN_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stats_due.wait(), STATS_INTERVAL)

    def _scope_group(self, scope: str) -> str:
        return ALL_TASKS_GROUP if scope == "all" else user_group(self.user.pk)

    def _groups(self) -> list[str]:
        groups = [self._scope_group(scope) for scope in getattr(self, "scopes", ())]
        return groups + [task_group(t) for t in getattr(self, "task_ids", ())]


class PingWorkerConsumer(RetryingAsyncConsumer):
    """Answers pings on the ``realtime-ping`` worker channel.

    Lets a browser (and the end-to-end tests) check the whole path: websocket,
    channel layer, a ``runworker`` process and back. A ping is a plain
    message, not a task: a reply that fails gets the short in-place retries,
    and the worker keeps serving the channel.
    """

    channel = "realtime-ping"

    async def ping_request(self, message: dict[str, Any]) -> None:
        """Called for each ping: replies to the websocket that sent it."""
        await self.channel_layer.send(
            message["reply_channel"],
            {"type": "ping.reply", "id": message["id"], "worker": worker_id()},
        )
