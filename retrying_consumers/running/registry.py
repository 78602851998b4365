"""The workers' registry: each process's row, its heartbeat and what it runs.

``manage.py tasks workers`` and the dashboard read it; a worker writes its row
as it starts and every ``heartbeat_interval`` seconds, and deletes it as it
stops.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from django.utils import timezone

from ..core.conf import worker_id
from ..models import WorkerRecord
from ..storage.writers import write_turn


def register(channels: list[str], concurrency: int, running: list[str]) -> None:
    """Write this process's row: its channels, slots and running tasks' ids."""
    now = timezone.now()
    with write_turn():
        save_registry(now, channels, concurrency, running)


def save_registry(
    now: datetime, channels: list[str], concurrency: int, running: list[str]
) -> None:
    WorkerRecord.objects.update_or_create(
        id=worker_id(),
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "channels": channels,
            "concurrency": concurrency,
            "running": running,
            "heartbeat_at": now,
        },
        create_defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "channels": channels,
            "concurrency": concurrency,
            "running": running,
            "started_at": now,
            "heartbeat_at": now,
        },
    )


def unregister() -> None:
    """Delete this process's row."""
    WorkerRecord.objects.filter(id=worker_id()).delete()
