"""Celery 5 on the bench's Redis: one no-op task, results ignored.

Run by ``celery -A bench.celery_app worker --pool prefork --concurrency 2``.
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


@app.task(name="bench.noop")
def noop(n: int) -> None:
    mark_done(n)
