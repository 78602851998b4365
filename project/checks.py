"""Deployment checks of the project (``manage.py check --deploy``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.db import DatabaseError

#: The login that development mode (``make run``) makes.
DEV_USER = "admin"
DEV_PASSWORD = "admin"


def register() -> None:
    """Register the deployment checks (called when the apps are ready)."""
    checks.register(check_development_login, checks.Tags.security, deploy=True)


def check_development_login(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E001: development mode's admin/admin login still works outside it.

    A store first used with ``make run`` keeps that superuser; in production
    anyone could log in with it.
    """
    if settings.DEBUG:
        return []
    from django.contrib.auth import get_user_model

    try:
        user = get_user_model()._default_manager.filter(username=DEV_USER).first()
    except DatabaseError:
        return []  # no database to look at yet: nothing to find
    if user is None or not user.is_active or not user.check_password(DEV_PASSWORD):
        return []
    return [
        checks.Error(
            f"the development login {DEV_USER}/{DEV_PASSWORD} works, and it is "
            "a superuser: anyone can log in with it",
            hint=f"Give it a strong password (manage.py changepassword "
            f"{DEV_USER}) or deactivate it, or use a new database.",
            id="project.E001",
        )
    ]
