"""The Schedules page in real headless Chromium, with a worker ticking."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from tests.processes import process_env, running, start_daphne, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def live(tmp_path: Path, redis_client: Any):
    ops = get_user_model().objects.create_user(
        "ops", password="pw-ops-2026", is_staff=True
    )
    ops.user_permissions.add(
        *Permission.objects.filter(content_type__model="taskrecord")
    )
    env = process_env(DJANGO_SETTINGS_MODULE="tests.browser.schedule_settings")
    daphne, port = start_daphne(env, tmp_path)
    worker = start_worker(env, tmp_path, ["examples"])
    with running([daphne, worker]):
        yield f"http://127.0.0.1:{port}"


def test_staff_watch_a_schedule_tick_on_the_schedules_page(
    browser: Any, live: str, output_dir: Path
) -> None:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(live + "/")
    page.get_by_label("Username").fill("ops")
    page.get_by_label("Password").fill("pw-ops-2026")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Schedules").click()
    expect(page.locator("h1")).to_have_text("Schedules")

    nightly = page.locator('tr[data-schedule="nightly-example"]')
    expect(nightly).to_contain_text("0 3 * * *")
    expect(nightly).to_contain_text("Europe/Berlin")
    expect(nightly.locator("[data-field=last_tick]")).to_have_text("not yet")

    ticking = page.locator('tr[data-schedule="example-every-2s"]')
    expect(ticking).to_contain_text("every 2s")
    # The page refreshes itself: the worker's ticks show up without a reload.
    badge = ticking.locator("[data-field=last_task] .badge")
    expect(badge).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#connection-state")).to_have_text(re.compile("refreshed"))
    page.screenshot(path=str(output_dir / "schedules.png"), full_page=True)

    badge.click()
    expect(page.locator("h1")).to_contain_text("example.long")
