"""The checks of ``enqueue``'s arguments, each naming the argument it refuses.

Every check raises ``InvalidArgument`` (a ``ValueError``) and touches neither
the channel layer nor, but for :func:`check_owner`, the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model

from ..core.exceptions import InvalidArgument
from ..core.payload import shown, text_problem

CHANNEL_NAME = re.compile(r"[a-zA-Z0-9\-_.]{1,99}")
MESSAGE_TYPE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.]{0,199}")
#: The most attempts ``enqueue`` lets one task have. The store's columns hold
#: 2**31 - 1, and each re-drive of a dead task adds its attempts so far.
MAX_ATTEMPTS_LIMIT = 1_000_000
#: The most characters of an idempotency key (its column's size).
MAX_KEY_LENGTH = 200


def validate_address(channel: str, type: str) -> None:
    """Raise ``InvalidArgument`` unless ``channel`` and ``type`` can route a message."""
    if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
        raise InvalidArgument(
            "channel",
            f"{shown(channel)} is not a channel name (ASCII letters, digits, "
            "'-', '_' and '.', under 100 characters)",
        )
    if not isinstance(type, str) or not MESSAGE_TYPE.fullmatch(type):
        raise InvalidArgument(
            "type",
            f"{shown(type)} is not a message type (an ASCII letter, then up to "
            "199 letters, digits, '_' and '.', e.g. 'thumbnail.generate')",
        )


def validate_max_attempts(max_attempts: Any) -> None:
    """Raise ``InvalidArgument`` unless ``max_attempts`` is None or fits the store."""
    if max_attempts is not None and (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidArgument(
            "max_attempts",
            f"must be an int from 1 to {MAX_ATTEMPTS_LIMIT}, got {shown(max_attempts)}",
        )


def validate_idempotency_key(key: Any) -> None:
    """Raise ``InvalidArgument`` unless ``key`` is None or a key the store keeps."""
    if key is None:
        return
    if not isinstance(key, str):
        problem = f"must be a str or None, not {type(key).__name__}"
    elif not key:
        problem = "must not be empty (pass None for no key)"
    elif len(key) > MAX_KEY_LENGTH:
        problem = f"is {len(key)} characters long; at most {MAX_KEY_LENGTH} fit"
    else:
        problem = text_problem(key) or ""
    if problem:
        raise InvalidArgument("idempotency_key", problem)


def utc_run_after(run_after: Any) -> datetime | None:
    """``run_after`` in UTC; raises ``InvalidArgument`` unless it is an aware
    datetime that UTC can hold (the stores keep times in UTC)."""
    if run_after is None:
        return None
    if not isinstance(run_after, datetime) or run_after.utcoffset() is None:
        raise InvalidArgument(
            "run_after", f"must be an aware datetime, got {shown(run_after)}"
        )
    try:
        return run_after.astimezone(UTC)
    except OverflowError:
        raise InvalidArgument(
            "run_after", f"{run_after.isoformat()} is outside years 1 to 9999 in UTC"
        ) from None


def owner_id(user: Any) -> Any:
    """The primary key of the user who owns the task, or None for nobody."""
    from django.contrib.auth.models import AnonymousUser  # needs the app registry

    if user is None or isinstance(user, AnonymousUser):
        return None
    model = get_user_model()
    label = model._meta.label
    if not isinstance(user, model):
        raise InvalidArgument(
            "user",
            f"must be an instance of {label}, an AnonymousUser or None, "
            f"not {user.__class__.__name__}",
        )
    if user.pk is None:
        raise InvalidArgument("user", f"this {label} is not saved (it has no pk)")
    return user.pk


def check_owner(owner_id: Any) -> None:
    # PostgreSQL checks the owner's foreign key only when the transaction
    # commits; look now, so that enqueue itself says what is wrong.
    if owner_id is not None:
        model = get_user_model()
        if not model._default_manager.filter(pk=owner_id).exists():
            raise InvalidArgument(
                "user", f"no {model._meta.label} has pk {shown(owner_id)}"
            )


def same_json(stored: Any, given: Any) -> bool:
    """Whether ``given`` (a checked payload) is what ``stored`` (read back from
    the store) holds: equal numbers are equal whatever their type
    (PostgreSQL's jsonb gives ``1e20`` back as an int), but a bool is not a
    number, and dict keys may come back in any order."""
    if isinstance(stored, bool) or isinstance(given, bool):
        return type(stored) is type(given) and stored == given
    if isinstance(stored, dict) and isinstance(given, dict):
        return stored.keys() == given.keys() and all(
            same_json(stored[key], given[key]) for key in stored
        )
    if isinstance(stored, list) and isinstance(given, list):
        return len(stored) == len(given) and all(
            same_json(a, b) for a, b in zip(stored, given, strict=True)
        )
    if isinstance(stored, int | float) and isinstance(given, int | float):
        return stored == given
    return type(stored) is type(given) and bool(stored == given)
