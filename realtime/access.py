"""Who may keep an open websocket, and how many each user may open.

A websocket is authenticated once, at its handshake. Afterwards:

- **Logging out** closes the sockets of that session at once: Django's
  ``user_logged_out`` signal sends ``session.ended`` to the user's group
  (:func:`access_group`), which each process's hub hands to its sockets.
- **Every other way a session ends or a right is withdrawn** (the session
  expires or is deleted, the password changes, the account is deactivated or
  deleted, the staff flag or the *view* permission is taken away) is found by
  a re-check of every open socket every ``RECHECK_INTERVAL`` seconds, once per
  session and user per process: a socket whose session no longer logs its
  user in is closed; one that may no longer see every task loses its
  ``"all"`` subscription and gets a ``forbidden`` error frame.
- A user may have at most ``REALTIME_MAX_SOCKETS_PER_USER`` sockets open on
  one server process; the next one is closed after an error frame.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from types import SimpleNamespace
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.utils.module_loading import import_string

from realtime.hub import SESSION_ENDED
from realtime.permissions import may_see_all

logger = logging.getLogger("realtime.access")

#: Seconds between two re-checks of the open sockets of a process.
RECHECK_INTERVAL = 5.0
#: Sockets one user may have open on one server process, unless settings say.
MAX_SOCKETS_PER_USER = 20


def access_group(user_id: int) -> str:
    """The group that hears when one of the user's sessions ends."""
    return f"realtime-user-{user_id}"


def max_sockets_per_user() -> int:
    """``settings.REALTIME_MAX_SOCKETS_PER_USER``, else the default."""
    return int(getattr(settings, "REALTIME_MAX_SOCKETS_PER_USER", MAX_SOCKETS_PER_USER))


class Guarded(Protocol):
    """An open socket, as the re-check sees it."""

    user: Any
    session_key: str | None

    async def end_session(self) -> None: ...

    async def access_changed(self, user: Any, sees_all: bool) -> None: ...


class Sockets:
    """The open websockets of one process, by user, and their re-check."""

    def __init__(self) -> None:
        self.by_user: dict[int, set[Guarded]] = {}
        self.job: asyncio.Task[None] | None = None

    def count(self, user_id: int) -> int:
        """How many sockets ``user_id`` has open here."""
        return len(self.by_user.get(user_id, ()))

    def add(self, socket: Guarded) -> None:
        """Watch ``socket`` until :meth:`remove`."""
        self.by_user.setdefault(int(socket.user.pk), set()).add(socket)
        if self.job is None or self.job.done():
            self.job = asyncio.create_task(self._recheck_forever())

    def remove(self, socket: Guarded) -> None:
        """Forget ``socket`` (idempotent)."""
        user_id = int(socket.user.pk)
        sockets = self.by_user.get(user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.by_user[user_id]
        if not self.by_user and self.job is not None:
            self.job.cancel()
            self.job = None

    async def recheck(self) -> None:
        """Close or downgrade every socket whose rights changed (once now)."""
        sockets = [s for group in self.by_user.values() for s in group]
        verdicts = await database_sync_to_async(resolve)(
            {s.session_key for s in sockets if s.session_key},
            {int(s.user.pk) for s in sockets if not s.session_key},
        )
        for socket in sockets:
            key = socket.session_key or int(socket.user.pk)
            user, sees_all = verdicts.get(key, (None, False))
            try:
                if user is None or user.pk != socket.user.pk:
                    await socket.end_session()
                else:
                    await socket.access_changed(user, sees_all)
            except Exception:
                logger.exception("a websocket could not be re-checked")

    async def _recheck_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(RECHECK_INTERVAL)
            try:
                await self.recheck()
            except Exception:
                # The database may be away for a while: keep the sockets, try
                # again next time, and say so once per outage.
                log = logger.debug if failing else logger.warning
                log("websocket re-check failed", exc_info=True)
                failing = True
            else:
                failing = False


def resolve(
    session_keys: set[str], user_ids: set[int]
) -> dict[str | int, tuple[Any, bool]]:
    """Who each session logs in now, and whether they may see every task.

    A session logs nobody in once it is gone, expired, or its password hash no
    longer matches (Django's own check). Sockets without a session (built in
    code, as in tests) are checked by their user's id: active and present.
    """
    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    found: dict[str | int, tuple[Any, bool]] = {}
    rights: dict[int, bool] = {}

    def verdict(user: Any) -> tuple[Any, bool]:
        if user is None or not user.is_authenticated or not user.is_active:
            return None, False
        if user.pk not in rights:
            rights[user.pk] = may_see_all(user)
        return user, rights[user.pk]

    for key in session_keys:
        found[key] = verdict(get_user(SimpleNamespace(session=engine(key))))
    users = get_user_model()._default_manager.in_bulk(list(user_ids))
    for user_id in user_ids:
        found[user_id] = verdict(users.get(user_id))
    return found


_sockets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sockets] = (
    weakref.WeakKeyDictionary()
)


def sockets_here() -> Sockets:
    """The running loop's open sockets (one registry per server process)."""
    loop = asyncio.get_running_loop()
    found = _sockets.get(loop)
    if found is None:
        found = _sockets[loop] = Sockets()
    return found


@receiver(user_logged_out, dispatch_uid="realtime.access.close_sockets")
def close_sockets(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Called when someone logs out: ends the websockets of that session."""
    session = getattr(request, "session", None)
    if user is None or session is None or not session.session_key:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    group = access_group(user.pk)
    message = {
        "type": SESSION_ENDED,
        "group": group,
        "session_key": session.session_key,
    }
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # Logging out must work even when the channel layer does not: the
        # re-check closes the sockets a few seconds later instead.
        logger.warning("could not tell websockets about a logout", exc_info=True)
