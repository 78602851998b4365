"""What the dashboard reads from the store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from realtime import queries
from retrying_consumers.models import WorkerRecord

pytestmark = pytest.mark.django_db


def worker(name: str, seconds_ago: float) -> None:
    beat = timezone.now() - timedelta(seconds=seconds_ago)
    WorkerRecord.objects.create(
        id=name,
        host="h",
        pid=1,
        channels=["a"],
        concurrency=2,
        running=["t1"],
        started_at=beat,
        heartbeat_at=beat,
    )


def test_only_live_workers_are_shown_and_only_to_staff() -> None:
    worker("h:1", 1)
    worker("h:2", 60)  # died without a word
    users = get_user_model().objects
    staff = users.create_user("boss", is_staff=True)
    person = users.create_user("ada")
    shown = queries.stats(staff, "all")["workers"]
    assert [(w["id"], w["channels"], w["running"]) for w in shown] == [
        ("h:1", ["a"], ["t1"])
    ]
    assert queries.stats(person, "mine")["workers"] == []
