"""``manage.py runworker``: Channels' worker, started only once Redis answers.

An unreachable Redis is reported as one line and exit status 2 after
``REDIS_CONNECT_TIMEOUT`` seconds (default 10), instead of a traceback storm.
"""

from __future__ import annotations

from typing import Any

from channels.management.commands import runworker
from django.conf import settings

from project.config import ConfigError, wait_for_redis
from project.errors import fail


class Command(runworker.Command):
    help = "Run a worker for the given channels (waits for Redis first)."

    def handle(self, *args: Any, **options: Any) -> None:
        redis_url = getattr(settings, "REDIS_URL", None)
        if redis_url:
            try:
                wait_for_redis(
                    redis_url, getattr(settings, "REDIS_CONNECT_TIMEOUT", 10)
                )
            except ConfigError as err:
                fail(str(err))
        super().handle(*args, **options)
