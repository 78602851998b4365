"""Who may do what on the dashboard: Django's model permissions, as the admin.

The page and the websocket ask these, never ``is_staff`` alone, so that a staff
user with only the *view* permission can look but not act, exactly as in the
admin. Bulk actions ask :func:`may_act` too.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

VIEW = "retrying_consumers.view_taskrecord"
CHANGE = "retrying_consumers.change_taskrecord"
DELETE = "retrying_consumers.delete_taskrecord"

#: The permission each page action needs, as for the admin's actions.
ACTION_PERMISSIONS = {"retry": CHANGE, "cancel": CHANGE, "delete": DELETE}


def is_active_staff(user: Any) -> bool:
    """Staff whose account is active (the admin lets no one else in)."""
    return bool(
        user is not None
        and user.is_authenticated
        and getattr(user, "is_active", False)
        and user.is_staff
    )


def may_see_all(user: Any) -> bool:
    """True if ``user`` may see every task (the admin's view or change right)."""
    return is_active_staff(user) and bool(user.has_perm(VIEW) or user.has_perm(CHANGE))


def may_act(user: Any, action: str) -> bool:
    """True if ``user`` may ``action`` ("retry", "cancel" or "delete") any task."""
    permission = ACTION_PERMISSIONS.get(action)
    return (
        permission is not None and is_active_staff(user) and user.has_perm(permission)
    )


def check_action(user: Any, action: str) -> None:
    """Raise ``PermissionDenied`` unless :func:`may_act` allows ``action``."""
    if not may_act(user, action):
        raise PermissionDenied(f"not allowed to {action} tasks")
