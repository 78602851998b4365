"""The durable peers' no-op task, counted like every compared system's.

``noop`` is a task of Django's task framework (run by django-tasks-db's
``db_worker``); ``procrastinate_noop`` is procrastinate's. Both record that they
ran in Redis (``bench.counters``), one pipelined round trip, as Celery's and
Dramatiq's do.
"""

from __future__ import annotations

from django.tasks import task
from procrastinate.contrib.django import app

from bench.counters import mark_done


@task()
def noop(n: int) -> None:
    mark_done(n)


@app.task(name="bench_noop", queue="bench")
def procrastinate_noop(n: int) -> None:
    mark_done(n)
