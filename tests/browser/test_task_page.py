"""The task page in real headless Chromium, at desktop and phone sizes, against
live daphne and runworker: it follows its task without a reload, says who
retried it, fits a phone's width, and its buttons take clicks while it updates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from retrying_consumers import audit, enqueue
from retrying_consumers.models import Status, TaskRecord
from tests.processes import process_env, running, start_daphne, start_worker
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIZES = {
    "desktop": {"viewport": {"width": 1440, "height": 900}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
}
SECOND_PRECISION = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.fixture
def ops() -> Any:
    made = get_user_model().objects.create_user(
        "ops", password="pw-ops-2026", is_staff=True
    )
    made.user_permissions.add(
        *Permission.objects.filter(content_type__model="taskrecord")
    )
    return made


@pytest.fixture
def live(tmp_path: Path, redis_client: Any, ops: Any):
    env = process_env()
    daphne, port = start_daphne(env, tmp_path)
    worker = start_worker(env, tmp_path, ["examples", "realtime-ping"])
    with running([daphne, worker]):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(params=list(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page(browser: Any, live: str, size: str) -> Page:
    context = browser.new_context(**SIZES[size])
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(live + "/accounts/login/")
    page.get_by_label("Username").fill("ops")
    page.get_by_label("Password").fill("pw-ops-2026")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#connection-state")).to_have_text("connected")
    return page


def open_task(page: Page, live: str, task_id: Any) -> None:
    page.goto(f"{live}/tasks/{task_id}/")
    expect(page.locator("#connection-state")).to_have_text("connected")
    # Set once; a reload would lose it, so its survival proves the page stayed.
    page.evaluate("window.notReloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.notReloaded === true")


def assert_fits(page: Page, width: int) -> None:
    """Nothing is wider than the viewport, and every action is inside it."""
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth]"
    )
    assert max(widths) <= width, widths
    for button in page.locator("[data-live-actions] button").all():
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0
        assert box["x"] + box["width"] <= width, box


def shot(page: Page, output_dir: Path, name: str, size: str) -> None:
    path = output_dir / f"task-page-{name}-{size}.png"
    page.screenshot(path=str(path), full_page=True)


def test_a_new_attempt_and_then_the_result_appear_without_reload(
    page: Page, live: str, ops: Any, size: str, output_dir: Path
) -> None:
    task_id = enqueue("examples", "example.flaky", {"fail_times": 1}, user=ops)
    open_task(page, live, task_id)

    first = page.locator("#attempt-1")
    expect(first).to_contain_text("TransientError: service unavailable (attempt 1)")
    expect(first.locator("details pre")).to_contain_text(
        "Traceback", use_inner_text=False
    )
    first.locator("summary").click()  # the reader opens the traceback ...
    expect(first.locator("pre")).to_be_visible()
    expect(page.locator("#task-rows [data-field=status]")).to_contain_text("succeeded")
    expect(page.locator("#attempt-2")).to_contain_text("succeeded")
    expect(page.locator("#task-result")).to_contain_text("succeeded on attempt 2")
    expect(page.locator("#task-result")).not_to_contain_text("No result yet")
    finished = page.locator("[data-fact=finished]")
    expect(finished).to_contain_text(SECOND_PRECISION)
    expect(finished).to_contain_text(re.compile(r"took \d"))
    expect(page.locator("#attempt-2")).to_contain_text(re.compile(r"took \d+\.\d+ s"))
    expect(page.locator("[data-action=retry]")).to_be_disabled()
    expect(page.locator("[data-action=cancel]")).to_be_disabled()
    expect(first.locator("pre")).to_be_visible()  # ... and it stays open
    assert_not_reloaded(page)
    assert_fits(page, SIZES[size]["viewport"]["width"])
    shot(page, output_dir, "succeeded", size)


def test_after_retry_now_the_reason_says_who_retried_and_the_counts_agree(
    page: Page, live: str, ops: Any, size: str, output_dir: Path
) -> None:
    task_id = enqueue("examples", "example.doomed", {}, user=ops)
    open_task(page, live, task_id)
    reason = page.locator("[data-fact=reason]")
    expect(page.locator("#task-rows [data-field=status]")).to_contain_text(
        "dead", timeout=30_000
    )
    expect(reason).to_contain_text("attempts exhausted (3 of 3)")
    expect(page.locator("#attempt-3")).to_contain_text("PermanentError")
    assert_not_reloaded(page)

    page.locator("[data-action=retry]").click()
    expect(page.locator("#task-title")).to_contain_text("example.doomed")
    expect(page.locator("ol.trail")).to_contain_text("re-driven by ops")
    expect(page.locator("ol.trail")).to_contain_text("from the task page")
    attempt = page.locator("#task-rows [data-field=attempt]")
    expect(attempt).to_contain_text(re.compile(r"attempt [3-6] of 6"))
    expect(page.locator("#task-rows [data-field=status]")).to_contain_text(
        "dead", timeout=30_000
    )
    expect(attempt).to_contain_text("attempt 6 of 6 (3 of 3 since the retry)")
    expect(page.locator("#attempt-6")).to_contain_text("PermanentError")
    expect(reason).to_contain_text("attempts exhausted (3 of 3)")

    task = TaskRecord.objects.get(pk=task_id)
    assert (task.attempt, task.max_attempts, task.drive_offset) == (6, 6, 3)
    [entry] = audit.trail(task_id)
    assert (entry.action, entry.actor_name, entry.source) == ("redrive", "ops", "page")
    assert_fits(page, SIZES[size]["viewport"]["width"])
    shot(page, output_dir, "redriven", size)


def test_actions_taken_elsewhere_show_up_live(page: Page, live: str, ops: Any) -> None:
    task_id = enqueue("examples", "example.doomed", {}, user=ops)
    wait_until(
        lambda: TaskRecord.objects.get(pk=task_id).status == Status.DEAD,
        30,
        "the task to die",
    )
    open_task(page, live, task_id)
    expect(page.locator("[data-fact=reason]")).to_contain_text("attempts exhausted")
    # Someone else re-drives it (another tab, the admin): this page follows.
    audit.retry_now(task_id, audit.Actor.of(None, "admin"))
    expect(page.locator("ol.trail")).to_contain_text("re-driven by someone")
    expect(page.locator("ol.trail")).to_contain_text("from the admin")
    expect(page.locator("#attempt-4")).to_contain_text("PermanentError")
    expect(page.locator("#task-rows [data-field=status]")).to_contain_text(
        "dead", timeout=30_000
    )
    expect(page.locator("#task-rows [data-field=attempt]")).to_contain_text(
        "(3 of 3 since the retry)"
    )
    expect(page.locator("#task-gone")).to_be_hidden()
    audit.delete(task_id, audit.Actor.of(None, "admin"))
    expect(page.locator("#task-gone")).to_be_visible()
    expect(page.locator("[data-action=retry]")).to_be_disabled()
    expect(page.locator("[data-action=delete]")).to_be_disabled()
    assert_not_reloaded(page)


def test_buttons_take_clicks_while_progress_streams_in(
    page: Page, live: str, ops: Any, size: str, output_dir: Path
) -> None:
    task_id = enqueue("examples", "example.long", {"steps": 200}, user=ops)
    open_task(page, live, task_id)
    bar = page.locator("[data-live=progress] progress")
    expect(bar).to_be_visible()
    cancel = page.locator("[data-action=cancel]")
    handle = cancel.element_handle()
    assert handle is not None
    first = float(bar.get_attribute("value") or 0)
    expect(bar).not_to_have_attribute("value", re.compile(rf"^{first:g}$"))
    expect(page.locator("#attempt-1")).to_contain_text("running")
    # The very element under the pointer survived every live patch.
    assert handle.evaluate("button => button.isConnected")
    assert_not_reloaded(page)
    assert_fits(page, SIZES[size]["viewport"]["width"])
    shot(page, output_dir, "running", size)

    if size == "phone":
        cancel.tap()
    else:
        cancel.click()
    expect(page.locator("#task-rows [data-field=status]")).to_contain_text("cancelled")
    expect(page.locator("[data-fact=reason]")).to_contain_text(
        re.compile(r"cancelled by ops at " + SECOND_PRECISION.pattern)
    )
    expect(page.locator("ol.trail")).to_contain_text("cancelled by ops")
    assert TaskRecord.objects.get(pk=task_id).status == Status.CANCELLED
    assert_fits(page, SIZES[size]["viewport"]["width"])
