"""First paint of the dashboard with many tasks stored: ``python -m bench.first_paint``.

Stores ``--tasks`` tasks (by default 10,000, in every status, over a day, on a
few channels, some failed with one of a few error classes), starts one daphne,
and opens the dashboard as a staff user in headless Chromium ``--runs`` times,
each in a fresh browser context (no cache). Reads the browser's own timings
(Performance API): the response's end, ``first-paint`` and
``first-contentful-paint``, in milliseconds from the start of navigation.
Prints every run and the median.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
from datetime import timedelta
from typing import Any

from bench.common import Bench, print_table, run_module, stopping
from bench.progress import start_daphne

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = Object.fromEntries(
    performance.getEntriesByType("paint").map((e) => [e.name, e.startTime]));
  return {
    response_end: nav.responseEnd,
    first_paint: paint["first-paint"],
    first_contentful_paint: paint["first-contentful-paint"],
    dom_content_loaded: nav.domContentLoadedEventEnd,
    response_start: nav.responseStart,
    script_end: Math.max(0, ...performance.getEntriesByType("resource")
      .filter((e) => e.name.endsWith(".js")).map((e) => e.responseEnd)),
    rows: document.querySelectorAll("#task-rows > tr").length,
    summary: (document.getElementById("list-summary") || {}).textContent || "",
  };
}"""


def seed(count: int) -> dict[str, Any]:
    """Django side: store ``count`` tasks and a staff user's session."""
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from retrying_consumers.models import Status, TaskRecord

    rng = random.Random(7)
    now = timezone.now()
    statuses = [Status.SUCCEEDED] * 70 + [Status.DEAD] * 8 + [Status.QUEUED] * 10
    statuses += [Status.RUNNING] * 4 + [Status.RETRYING] * 5 + [Status.CANCELLED] * 3
    errors = ["TimeoutError", "ConnectionResetError", "KeyError", "ValueError"]
    user = get_user_model().objects.create_user(
        "firstpaint", password="unused-firstpaint", is_staff=True
    )
    batch: list[TaskRecord] = []
    created_at = []
    for i in range(count):
        status = rng.choice(statuses)
        created = now - timedelta(seconds=rng.uniform(0, 86_400))
        created_at.append(created)
        failed = status in (Status.DEAD, Status.RETRYING) or rng.random() < 0.05
        finished = status in (Status.SUCCEEDED, Status.DEAD, Status.CANCELLED)
        started = created + timedelta(seconds=rng.uniform(0, 30))
        batch.append(
            TaskRecord(
                channel=f"channel-{i % 4}",
                type=f"app.job{i % 7}",
                payload={"n": i},
                status=status,
                attempt=rng.randint(1, 3) if status != Status.QUEUED else 0,
                max_attempts=3,
                error_class=rng.choice(errors) if failed else "",
                error_message="something went wrong" if failed else "",
                owner=user if i % 2 else None,
                started_at=started if status != Status.QUEUED else None,
                finished_at=started + timedelta(seconds=rng.uniform(0.1, 20))
                if finished
                else None,
                due_at=now + timedelta(seconds=rng.uniform(1, 600))
                if status == Status.RETRYING
                else None,
            )
        )
    TaskRecord.objects.bulk_create(batch, batch_size=1000)
    # created_at is set on insert: spread it over the day like real traffic.
    for task, created in zip(batch, created_at, strict=True):
        task.created_at = created
    TaskRecord.objects.bulk_update(batch, ["created_at"], batch_size=1000)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return {"session": session.session_key, "tasks": TaskRecord.objects.count()}


def measure(
    port: int, session: str, runs: int, path: str = "/"
) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH")
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            for _ in range(runs + 1):  # the first warms daphne up; not counted
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                context.add_cookies(
                    [
                        {
                            "name": "sessionid",
                            "value": session,
                            "url": f"http://127.0.0.1:{port}",
                        }
                    ]
                )
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}{path}", wait_until="load")
                page.wait_for_function(
                    "performance.getEntriesByName('first-contentful-paint').length"
                )
                results.append(page.evaluate(TIMINGS))
                context.close()
        finally:
            browser.close()
    return results[1:]


def main() -> None:
    if sys.argv[1:2] == ["seed"]:
        print(json.dumps(seed(int(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(prog="bench.first_paint", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--postgres", metavar="URL", help="use PostgreSQL instead of SQLite"
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    with Bench(capacity=100, keep=args.keep_logs) as bench:
        db = bench.postgres(args.postgres) if args.postgres else bench.sqlite()
        env = bench.env(db)
        stored = run_module(
            "bench.first_paint", env, ["seed", str(args.tasks)], 600, bench.logs
        )
        daphne, port = start_daphne(bench, env)
        with stopping([daphne]):
            results = measure(port, stored["session"], args.runs)
            # The same browser and server on the log-in page, which reads no
            # task: what the machine itself costs at the moment.
            baseline = measure(port, stored["session"], args.runs, "/accounts/login/")
    rows = []
    keys = (
        "response_start",
        "response_end",
        "first_paint",
        "first_contentful_paint",
        "dom_content_loaded",
        "script_end",
    )
    for key in keys:
        values = [r[key] for r in results]
        base = [r[key] for r in baseline]
        rows.append(
            [
                key.replace("_", " "),
                f"{statistics.median(values):.0f}",
                f"{min(values):.0f}",
                f"{max(values):.0f}",
                f"{statistics.median(base):.0f}",
            ]
        )
    print_table(
        f"Dashboard first paint, {stored['tasks']} tasks stored, {db.label}, "
        f"{args.runs} runs, Chromium 1440x900; ms from navigation start "
        f"(page shows {results[-1]['summary'].strip()!r}, "
        f"{results[-1]['rows']} rows)",
        ["timing", "median", "min", "max", "log-in page median"],
        rows,
    )


if __name__ == "__main__":
    main()
