"""Which method handles a message type: only those the user's consumer defines.

Channels turns a message's ``type`` into a method name (``"thumbnail.generate"``
becomes ``thumbnail_generate``) and calls whatever it finds. A message of type
``"dispatch"`` would then call the dispatcher itself, ``"send"`` the consumer's
own send, ``"decide_retry"`` a hook. Here a handler is a public method of the
consumer class whose name is not one of the machinery's own: the methods and
attributes of :class:`~retrying_consumers.mixin.RetryMixin`, of the library's
ready-made bases and of Channels' consumers, except Channels' protocol handlers
(``websocket_connect``, ``http_request``, ...), which are handlers by design.
A subclass that overrides a machinery method (``receive``, ``on_retry``, ...)
does not make it a handler.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

#: Method-name prefixes of Channels' protocol handlers, which are real handlers.
PROTOCOL_PREFIXES = ("websocket_", "http_")
#: Packages whose classes are machinery, not user consumers.
_MACHINERY_MODULES = (
    "channels.",
    "retrying_consumers.running.mixin",
    "retrying_consumers.running.consumers",
)


def handler_name(message_type: object) -> str | None:
    """The method name for ``message_type``, or None if it cannot name a handler."""
    if not isinstance(message_type, str) or not message_type:
        return None
    name = message_type.replace(".", "_")
    if name.startswith("_") or not name.isidentifier():
        return None
    return name


def find_handler(consumer: Any, message_type: object) -> Callable[..., Any] | None:
    """The bound handler of ``message_type`` on ``consumer``, or None."""
    name = handler_name(message_type)
    if name is None or not is_handler(type(consumer), name):
        return None
    handler = getattr(consumer, name, None)
    return handler if callable(handler) else None


def is_handler(consumer_class: type, name: str) -> bool:
    """Whether ``consumer_class.<name>`` is a handler the user's consumer defines."""
    if name in machinery_names(consumer_class):
        return False
    member = inspect.getattr_static(consumer_class, name, None)
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    # Decorated methods are callable objects; a nested class is not a handler.
    return callable(member) and not isinstance(member, type)


@functools.cache
def machinery_names(consumer_class: type) -> frozenset[str]:
    """Names defined by the machinery classes among ``consumer_class``'s bases."""
    names: set[str] = set(dir(object))
    for base in consumer_class.__mro__:
        if base is object or not base.__module__.startswith(_MACHINERY_MODULES):
            continue
        names.update(
            name for name in vars(base) if not name.startswith(PROTOCOL_PREFIXES)
        )
    return frozenset(names)
