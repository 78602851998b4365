"""The dashboard in real headless Chromium, against live daphne and runworker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from retrying_consumers.models import TaskRecord
from tests.processes import process_env, running, start_daphne, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def live(tmp_path: Path, redis_client: Any):
    ops = get_user_model().objects.create_user(
        "ops", password="pw-ops-2026", is_staff=True
    )
    # The admin's rights on tasks: see all, retry and cancel, delete.
    ops.user_permissions.add(
        *Permission.objects.filter(content_type__model="taskrecord")
    )
    env = process_env()
    daphne, port = start_daphne(env, tmp_path)
    worker = start_worker(env, tmp_path, ["examples", "realtime-ping"])
    with running([daphne, worker]):
        yield f"http://127.0.0.1:{port}"


def log_in(page: Page, base: str) -> None:
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill("ops")
    page.get_by_label("Password").fill("pw-ops-2026")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#connection-state")).to_have_text("connected")


def newest_row(page: Page, task_type: str):
    return page.locator("#task-rows tr", has_text=task_type).first


def test_watch_a_flaky_task_retry_and_succeed_and_a_doomed_one_die(
    browser: Any, live: str, output_dir: Path
) -> None:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live)

    page.get_by_role("button", name=re.compile("fails once")).click()
    row = newest_row(page, "example.flaky")
    bar = row.locator("progress")
    expect(bar).to_be_visible()
    first = float(bar.get_attribute("value"))
    expect(bar).not_to_have_attribute("value", str(first).rstrip("0").rstrip("."))
    expect(row.locator("[data-field=attempt]")).to_contain_text("attempt 1 of 3")
    expect(row.locator("[data-field=status]")).to_contain_text("waiting to retry")
    expect(row.locator("time[data-countdown]")).to_have_text(
        re.compile(r"in \d+ s|due now")
    )
    expect(row.locator("[data-field=error]")).to_contain_text("TransientError")
    expect(row.locator("[data-field=attempt]")).to_contain_text("attempt 2 of 3")
    expect(row.locator("[data-field=status]")).to_contain_text("succeeded")
    expect(bar).to_have_attribute("value", "4")

    page.get_by_role("button", name=re.compile("always fails")).click()
    doomed = newest_row(page, "example.doomed")
    expect(doomed.locator("[data-field=status]")).to_contain_text(
        "dead", timeout=30_000
    )
    expect(doomed.locator("[data-field=attempt]")).to_contain_text("attempt 3 of 3")
    page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)

    doomed.get_by_role("button", name="Retry now").click()
    doomed = newest_row(page, "example.doomed")
    expect(doomed.locator("[data-field=attempt]")).to_contain_text(
        re.compile(r"attempt [4-6] of 6")
    )
    task = TaskRecord.objects.get(type="example.doomed")
    assert task.attempt >= 4 and task.drive_offset == 3


def test_task_page_shows_attempts_and_updates_live(browser: Any, live: str) -> None:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    log_in(page, live)
    page.get_by_role("button", name=re.compile("always fails")).click()
    newest_row(page, "example.doomed").get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text("example.doomed")
    status = page.locator("#task-rows [data-field=status]")
    expect(status).to_contain_text("dead", timeout=30_000)
    page.reload()
    expect(page.locator("ol.attempts > li")).to_have_count(3)
    expect(page.locator("ol.attempts")).to_contain_text("PermanentError")
    page.locator("ol.attempts summary").first.click()
    expect(page.locator("ol.attempts pre").first).to_contain_text("Traceback")
