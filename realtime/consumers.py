"""The dashboard's websocket, and the worker consumer it pings.

Protocol (version 1) in docs/websocket-protocol.md. A user sees only their own
tasks; staff see all. Updates arrive on channel-layer groups (through the
process's hub, one group member per process: realtime/hub.py), are coalesced
per task for ``FLUSH_INTERVAL`` and sent in batches, so a chatty task or many tasks
at once cannot flood the browser; the final state of a task watched by id goes
out at once (at most one such early batch per ``FLUSH_INTERVAL``). Because
groups may drop messages, every subscribe answers with a snapshot read from the
store.

Abuse is bounded (docs/websocket-protocol.md, "Limits"): each connection may
send ``FRAME_RATE`` frames a second (``FRAME_BURST`` at once), a user may open
a bounded number of sockets per process, stats are computed once per process
per view (realtime/statsfeed.py), and a socket whose session ends or whose
rights are withdrawn is closed or downgraded (realtime/access.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from realtime import queries
from realtime.access import access_group, max_sockets_per_user, sockets_here
from realtime.hub import hub_for
from realtime.permissions import may_see_all
from realtime.protocol import (
    PROTOCOL_VERSION,
    FrameBudget,
    ProtocolError,
    Request,
    parse_frame,
)
from realtime.statsfeed import StatsKey, feed_for, stats_key
from retrying_consumers import RetryingAsyncConsumer
from retrying_consumers.core.conf import worker_id
from retrying_consumers.live.events import ALL_TASKS_GROUP, task_group, user_group
from retrying_consumers.models import FINAL

FLUSH_INTERVAL = 0.1
FRAME_RATE = 5.0  # client frames a second, on average
FRAME_BURST = 20.0  # client frames at once
#: Close codes (4000-4999 are the application's own).
CLOSE_SESSION_ENDED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429


class UpdateFrames:
    """The last ``update`` frame encoded in this process, for every socket whose
    batch holds the very same task states.

    The hub hands one decoded message to every socket of a group, so sockets
    that watch the same tasks queue the same dict objects, in the same order.
    With a thousand watchers, one batch was encoded a thousand times; now it is
    encoded once. Identity, not equality, decides: the frame keeps the dicts it
    was made from, so none of them can be freed and its id reused while the
    frame is remembered, and the dicts are never changed after they arrive.
    """

    def __init__(self) -> None:
        self.batch: tuple[dict[str, Any], ...] | None = None  # none encoded yet
        self.text = ""

    def encode(self, batch: list[dict[str, Any]]) -> str:
        if (
            self.batch is None
            or len(batch) != len(self.batch)
            or any(
                mine is not theirs
                for mine, theirs in zip(batch, self.batch, strict=True)
            )
        ):
            self.batch = tuple(batch)
            # What send_json would send (AsyncJsonWebsocketConsumer.encode_json).
            self.text = json.dumps({"type": "update", "tasks": batch})
        return self.text


update_frames = UpdateFrames()


class RealtimeConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/tasks/``: subscribe to tasks, get snapshots and live updates."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # refuses the handshake: HTTP 403
            return
        self.user = user
        self.session_key: str | None = _session_key(self.scope)
        # Staff may watch anyone's task by id; the re-check keeps this current.
        self.sees_all = bool(user.is_staff) and await database_sync_to_async(
            may_see_all
        )(user)
        self.closed = False
        self.budget = FrameBudget(FRAME_RATE, FRAME_BURST)
        self.throttled = False
        self.scopes: set[str] = set()
        self.task_ids: set[uuid.UUID] = set()
        self.pending: dict[str, dict[str, Any]] = {}
        self.flusher: asyncio.Task[None] | None = None
        self.last_flush = -FLUSH_INTERVAL
        self.flush_now = asyncio.Event()  # a watched task ended: no waiting
        self.last_early = -FLUSH_INTERVAL
        self.stats_watched: StatsKey | None = None
        await self.accept()
        sockets = sockets_here()
        if sockets.count(user.pk) >= max_sockets_per_user():
            self.closed = True
            await self.send_error(
                "too_many_sockets",
                f"At most {max_sockets_per_user()} open connections per user.",
            )
            await self.close(CLOSE_TOO_MANY_SOCKETS)
            return
        sockets.add(self)
        await hub_for(self.channel_layer).join(access_group(user.pk), self)
        await self.send_json(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "user": user.get_username(),
                "staff": bool(user.is_staff),
            }
        )

    async def disconnect(self, code: int) -> None:
        await self._detach()

    async def _detach(self) -> None:
        """Leave every group, feed and registry (once; also on a forced close)."""
        if not hasattr(self, "user") or getattr(self, "detached", False):
            return
        self.detached = True
        if self.flusher is not None:
            self.flusher.cancel()
        await self._watch_stats(None)
        sockets_here().remove(self)
        hub = hub_for(self.channel_layer)
        for group in [*self._groups(), access_group(self.user.pk)]:
            await hub.leave(group, self)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if getattr(self, "closed", True):
            return
        if not self.budget.take():
            # One error frame per flood, not one per dropped frame.
            if not self.throttled:
                self.throttled = True
                await self.send_error(
                    "rate_limited",
                    f"At most {FRAME_RATE:g} frames a second; frames are dropped.",
                )
            return
        self.throttled = False
        try:
            request = parse_frame(text_data, bytes_data)
            await self.handle(request)
        except ProtocolError as err:
            await self.send_error(err.code, err.detail, err.request_id)

    async def handle(self, request: Request) -> None:
        """Act on one valid client frame."""
        if request.action == "ping":
            try:
                await self.channel_layer.send(
                    PingWorkerConsumer.channel,
                    {
                        "type": "ping.request",
                        "reply_channel": self.channel_name,
                        "id": request.id,
                    },
                )
            except ChannelFull:
                raise ProtocolError(
                    "unavailable",
                    "No worker is taking pings now; try again later.",
                    request.id,
                ) from None
        elif request.action == "subscribe":
            await self.subscribe(request)
        else:
            await self.unsubscribe(request)

    async def subscribe(self, request: Request) -> None:
        """Join the groups asked for and send a snapshot from the store."""
        if request.scope is not None:
            if request.scope == "all":
                self.sees_all = await database_sync_to_async(may_see_all)(self.user)
                if not self.sees_all:
                    raise ProtocolError(
                        "forbidden",
                        "Only staff with the view permission may subscribe to all "
                        "tasks.",
                        request.id,
                    )
            self.scopes.add(request.scope)
            await hub_for(self.channel_layer).join(
                self._scope_group(request.scope), self
            )
            tasks = await database_sync_to_async(queries.snapshot)(
                self.user, request.scope
            )
            await self._send_snapshot(request, tasks)
            await self._watch_stats(self._stats_view())
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
            await self._watch_stats(self._stats_view())
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

    async def session_ended(self, event: dict[str, Any]) -> None:
        """Called by the hub when one of the user's sessions logged out."""
        if event.get("session_key") in (None, self.session_key):
            await self.end_session()

    async def end_session(self) -> None:
        """The session no longer logs this user in: say so and close."""
        if self.closed:
            return
        self.closed = True
        await self.send_error("session_ended", "The session ended; log in again.")
        await self.close(CLOSE_SESSION_ENDED)
        await self._detach()

    async def access_changed(self, user: Any, sees_all: bool) -> None:
        """Called by the re-check with the user's current rights: a socket
        that may no longer see every task loses its "all" subscription."""
        self.user, self.sees_all = user, sees_all
        if "all" in self.scopes and not sees_all:
            self.scopes.discard("all")
            await hub_for(self.channel_layer).leave(ALL_TASKS_GROUP, self)
            await self._watch_stats(self._stats_view())
            await self.send_error(
                "forbidden", "You may no longer see all tasks; unsubscribed."
            )

    async def send_stats(self, frame: str) -> None:
        """Called by the process's stats feed with a ready ``stats`` frame."""
        if not self.closed:
            await self.send(text_data=frame)

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
        if "all" in self.scopes and self.sees_all:
            return True
        own = task.get("owner_id") == self.user.pk
        if "mine" in self.scopes and own:
            return True
        return (own or self.sees_all) and self._watched_by_id(task)

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
            await self.send(text_data=update_frames.encode(batch))
            if self.stats_watched is not None:  # counters follow changes soon
                feed_for(queries.stats).poke(self.stats_watched)

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

    def _stats_view(self) -> StatsKey | None:
        if not self.scopes:
            return None
        return stats_key("all" if "all" in self.scopes else "mine", self.user)

    async def _watch_stats(self, key: StatsKey | None) -> None:
        """Get the stats of ``key`` (a scope's view) from the process's feed."""
        if key == self.stats_watched:
            return
        feed = feed_for(queries.stats)
        if self.stats_watched is not None:
            feed.unwatch(self.stats_watched, self)
        self.stats_watched = key
        if key is not None:
            await feed.watch(key, self.user, self)

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


def _session_key(scope: dict[str, Any]) -> str | None:
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return key if isinstance(key, str) else None
