"""Celery 5 on the bench's Redis: one no-op task, results ignored.

Run by ``celery -A bench.celery_app worker`` (prefork, concurrency = the cores,
its defaults). With ``BENCH_CELERY_DURABLE=1`` it runs in its durable
configuration: ``acks_late`` (a task is acknowledged after it ran, not as it
starts) with ``task_reject_on_worker_lost`` (a task whose worker process died is
put back instead of being acknowledged).
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

from bench.counters import mark_done

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if os.environ.get("BENCH_CELERY_DURABLE") == "1":
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True)


@app.task(name="bench.noop")
def noop(n: int) -> None:
    mark_done(n)
