"""The dashboard's list, live rows, health and connection, in real Chromium.

Every test runs at desktop (1440x900) and phone (390x844) size, against live
daphne and runworker processes, and keeps a screenshot in test-results/.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.utils import timezone
from playwright.sync_api import Page, expect

from retrying_consumers import enqueue_many
from retrying_consumers.models import Status, TaskRecord
from tests.processes import (
    Child,
    free_port,
    port_open,
    process_env,
    running,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": (1440, 900), "phone": (390, 844)}
# The machine runs daphne, a worker and Chromium at once: conditions may take
# longer than Playwright's default 5 s to become true.
expect.set_options(timeout=15_000)
PASSWORD = "pw-dash-2026"


class Server:
    """daphne on a fixed port, so that it can be stopped and started again."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir, self.port = env, log_dir, free_port()
        self.child: Child | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import sys

        self.runs += 1
        self.child = Child(
            f"daphne{self.runs}",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "project.asgi:application",
            ],
            self.env,
            self.log_dir,
        )
        wait_until(lambda: port_open(self.port), 20, "daphne to listen")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            wait_until(lambda: not port_open(self.port), 10, "daphne to stop")


@pytest.fixture
def server(tmp_path: Path, redis_client: Any) -> Iterator[Server]:
    users = get_user_model().objects
    ops = users.create_user("ops", password=PASSWORD, is_staff=True)
    for codename in ("change_taskrecord", "delete_taskrecord"):
        ops.user_permissions.add(Permission.objects.get(codename=codename))
    users.create_user("alice", password=PASSWORD)
    users.create_user("bob", password=PASSWORD)
    env = process_env()
    daphne = Server(env, tmp_path)
    daphne.start()
    worker = start_worker(env, tmp_path, ["examples", "realtime-ping"])
    try:
        with running([worker]):
            yield daphne
    finally:
        daphne.stop()


@pytest.fixture(params=list(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_page(browser: Any, server: Server, size: str) -> Callable[[str], Page]:
    def open_as(username: str) -> Page:
        width, height = SIZES[size]
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(server.url + "/")
        expect(page).to_have_url(re.compile(r"/accounts/login/"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#connection-state")).to_have_text("connected")
        return page

    return open_as


def in_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` off this thread: Playwright's loop runs in this one."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            from django.db import connection

            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0] if result else None


def seed(n: int, owner: Any = None, **fields: Any) -> list[TaskRecord]:
    """``n`` stored tasks a second apart, oldest first, none of them rung."""
    now = timezone.now()
    tasks = [
        TaskRecord(channel=fields.pop("channel", "seed"), type="seed.job", owner=owner)
        for _ in range(n)
    ]
    for task in tasks:
        for key, value in fields.items():
            setattr(task, key, value)
    made = TaskRecord.objects.bulk_create(tasks)
    for i, task in enumerate(made):
        TaskRecord.objects.filter(pk=task.pk).update(
            created_at=now - timedelta(minutes=10, seconds=n - i)
        )
    return made


def no_horizontal_overflow(page: Page) -> None:
    width = page.viewport_size["width"]  # type: ignore[index]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"page is {scroll} px wide in a {width} px viewport"


def on_screen(page: Page, locator: Any) -> None:
    box = locator.bounding_box()
    width = page.viewport_size["width"]  # type: ignore[index]
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def summary(page: Page) -> Any:
    return page.locator("#list-summary")


def rows(page: Page) -> Any:
    return page.locator("#task-rows > tr")


def test_pages_sorting_search_views_health_and_chart(
    open_page: Callable[[str], Page], size: str, output_dir: Path
) -> None:
    now = timezone.now()
    seed(150, status=Status.SUCCEEDED, finished_at=now, started_at=now)
    seed(
        40,
        status=Status.DEAD,
        error_class="ConnectionResetError",
        error_message="peer went away",
        finished_at=now,
        attempt=3,
    )
    seed(
        12,
        status=Status.RETRYING,
        error_class="Timeout",
        due_at=now + timedelta(minutes=5),
        attempt=1,
    )
    seed(30, channel="nobody-listens", status=Status.QUEUED)
    page = open_page("ops")

    expect(summary(page)).to_have_text(re.compile(r"^1\u201325 of 232"))
    expect(rows(page)).to_have_count(25)
    no_horizontal_overflow(page)
    on_screen(page, rows(page).first.get_by_role("button", name="Cancel"))
    expect(rows(page).first.locator("[data-field=time]")).to_contain_text("created")
    page.screenshot(path=str(output_dir / f"dashboard-{size}.png"), full_page=True)

    page.get_by_role("link", name="Next →").click()
    expect(summary(page)).to_have_text(re.compile(r"^26\u201350 of 232"))
    expect(page.get_by_text("Page 2 of 10")).to_be_visible()

    # Health: the unserved channel is flagged, with its oldest queued task's age.
    unserved = page.locator('#backlog tr[data-channel="nobody-listens"]')
    expect(unserved.locator("[data-unserved]")).to_contain_text("no live worker")
    expect(unserved.locator("td[data-age]")).to_have_text(re.compile(r"1\d min"))
    expect(page.locator('#backlog tr[data-channel="examples"]')).to_have_count(0)

    # The chart has axes, both series and the longer ranges.
    chart = page.locator("#throughput")
    expect(chart.locator("text.axis")).to_have_count(6)
    page.get_by_role("button", name="Hour").click()
    expect(chart).to_have_attribute("data-range", "hour")
    expect(page.locator("#throughput-now")).to_contain_text("150 succeeded, 40 dead")
    page.get_by_role("button", name="Day").click()
    expect(chart).to_have_attribute("data-range", "day")
    expect(chart.locator("rect.dead")).to_have_count(1)

    # Views with counts, failures by error class, search by what rows show.
    views = page.get_by_role("navigation", name="Task views")
    expect(views.get_by_role("link", name=re.compile(r"Dead 40"))).to_be_visible()
    expect(views.get_by_role("link", name=re.compile(r"Retries 12"))).to_be_visible()
    page.locator("#failures").get_by_role("link", name="ConnectionResetError").click()
    expect(summary(page)).to_have_text(re.compile(r"of 40\b"))
    short = rows(page).first.locator("code").inner_text()
    assert len(short) == 8
    page.get_by_label("Search").fill(short)
    page.get_by_role("button", name="Apply").click()
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first.locator("code")).to_have_text(short)
    page.goto(page.url.split("?")[0] + "?q=Timeout&sort=next&dir=asc")
    expect(summary(page)).to_have_text(re.compile(r"^1\u201312 of 12"))
    no_horizontal_overflow(page)

    # Bulk retry of the Dead view, confirmed with its count.
    page.goto(page.url.split("?")[0] + "?status=dead")
    page.get_by_role("button", name="Retry…").click()
    expect(page.locator("h1")).to_have_text("Retry 40 tasks?")
    no_horizontal_overflow(page)
    page.screenshot(path=str(output_dir / f"bulk-confirm-{size}.png"))
    page.get_by_role("button", name="Retry 40 tasks").click()
    expect(page.locator(".messages")).to_contain_text("40 tasks retried")
    assert TaskRecord.objects.filter(status=Status.DEAD).count() == 0


def test_a_burst_keeps_the_page_size_and_offers_new_tasks(
    open_page: Callable[[str], Page], size: str, output_dir: Path
) -> None:
    seed(60, status=Status.SUCCEEDED)
    ops = get_user_model().objects.get(username="ops")
    page = open_page("ops")
    expect(rows(page)).to_have_count(25)
    page.evaluate(
        """() => {
        window.maxRows = 0;
        const body = document.getElementById("task-rows");
        new MutationObserver(() => {
          const n = document.querySelectorAll("#task-rows > tr").length;
          window.maxRows = Math.max(window.maxRows, n);
        }).observe(body.parentNode, { childList: true, subtree: true });
        }"""
    )
    in_thread(
        lambda: enqueue_many(
            "examples", "example.long", [{"steps": 0}] * 1000, user=ops
        )
    )
    wait_until(
        lambda: (
            TaskRecord.objects.filter(
                type="example.long", status=Status.SUCCEEDED
            ).count()
            == 1000
        ),
        90,
        "1,000 tasks to succeed",
    )
    banner = page.locator("#new-tasks")
    expect(banner).to_have_text(re.compile(r"^\d+ new tasks? — show"))
    counters = page.locator('[data-counter="succeeded"] dd')
    expect(counters).to_have_text("1060")
    assert page.evaluate("window.maxRows") <= 25
    expect(rows(page)).to_have_count(25)
    no_horizontal_overflow(page)
    page.screenshot(path=str(output_dir / f"burst-{size}.png"))
    banner.click()
    expect(banner).to_be_hidden()
    expect(summary(page)).to_have_text(re.compile(r"^1\u201325 of 1060"))
    expect(rows(page).first).to_contain_text("example.long")
    expect(rows(page)).to_have_count(25)


def test_clicks_on_live_rows_land_and_every_tab_agrees(
    open_page: Callable[[str], Page], size: str, output_dir: Path
) -> None:
    ops = get_user_model().objects.get(username="ops")
    ids = in_thread(
        lambda: enqueue_many(
            "examples", "example.long", [{"steps": 400}] * 10, user=ops
        )
    )
    wait_until(
        lambda: TaskRecord.objects.filter(status=Status.RUNNING).count() == 10,
        30,
        "10 tasks to run",
    )
    page = open_page("ops")
    watcher = open_page("ops")
    watcher.goto(watcher.url.split("?")[0] + "?status=running")
    expect(rows(watcher)).to_have_count(10)
    live_rows = page.locator("#task-rows > tr", has_text="example.long")
    expect(live_rows).to_have_count(10)
    # Progress moves under the buttons while they are clicked.
    bar = live_rows.first.locator("progress")
    first = bar.get_attribute("value")
    expect(bar).not_to_have_attribute("value", first or "")
    for i in range(10):
        button = live_rows.nth(i).get_by_role("button", name="Cancel")
        on_screen(
            page, button
        ) if size == "desktop" else button.scroll_into_view_if_needed()
        button.click()
        page.wait_for_timeout(100)  # the pace of the clicks, not a wait for a state
        row_id = live_rows.nth(i).get_attribute("data-task-id")
        focused = "document.activeElement.closest('tr[data-task-id]')?.dataset.taskId"
        assert page.evaluate(focused) == row_id  # focus stays in the row
    wait_until(
        lambda: (
            TaskRecord.objects.filter(pk__in=ids, status=Status.CANCELLED).count() == 10
        ),
        20,
        "all 10 clicks to cancel their task",
    )
    for i in range(10):
        expect(live_rows.nth(i).locator("[data-field=status]")).to_contain_text(
            "cancelled"
        )
        expect(live_rows.nth(i).get_by_role("button", name="Cancel")).to_be_disabled()
    # The other tab, filtered on running, dropped every row that left the filter.
    expect(rows(watcher)).to_have_count(0)
    expect(watcher.locator("#no-tasks")).to_be_visible()
    no_horizontal_overflow(page)
    page.screenshot(path=str(output_dir / f"cancelled-{size}.png"), full_page=True)


def test_disconnected_page_is_stale_then_resyncs_or_goes_to_log_in(
    open_page: Callable[[str], Page], server: Server, size: str, output_dir: Path
) -> None:
    doomed, kept = seed(2, status=Status.DEAD)
    page = open_page("ops")
    expect(rows(page)).to_have_count(2)
    server.stop()
    banner = page.locator("#stale-banner")
    expect(banner).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-stale", "1")
    state = page.locator("#connection-state")
    expect(state).to_have_text(re.compile(r"reconnecting in \d+ s"))
    shown = state.inner_text()
    expect(state).not_to_have_text(shown)  # the countdown moves
    no_horizontal_overflow(page)
    page.screenshot(path=str(output_dir / f"stale-{size}.png"))
    TaskRecord.objects.filter(pk=doomed.pk).delete()  # while the page was away
    seed(1, status=Status.SUCCEEDED)
    server.start()
    expect(state).to_have_text("connected", timeout=40_000)
    expect(banner).to_be_hidden()
    expect(page.locator(f'tr[data-task-id="{doomed.pk}"]')).to_have_count(0)
    expect(page.locator(f'tr[data-task-id="{kept.pk}"]')).to_have_count(1)
    expect(rows(page)).to_have_count(2)

    # The session ends while the page is away: it goes to log in, not round again.
    server.stop()
    expect(banner).to_be_visible()
    Session.objects.all().delete()
    server.start()
    expect(page).to_have_url(
        re.compile(r"/accounts/login/\?next=(/|%2F)"), timeout=40_000
    )


def test_people_see_and_hear_only_their_own_tasks(
    open_page: Callable[[str], Page], size: str, output_dir: Path
) -> None:
    users = get_user_model().objects
    alice, bob = users.get(username="alice"), users.get(username="bob")
    seed(3, owner=alice, status=Status.SUCCEEDED)
    seed(5, owner=bob, status=Status.DEAD)
    page = open_page("alice")
    expect(summary(page)).to_have_text(re.compile(r"^1\u20133 of 3"))
    expect(page.locator("td.actions")).to_have_count(0)
    expect(page.locator("form.bulk")).to_have_count(0)
    assert page.request.get(page.url.split("?")[0] + "bulk/retry/").status == 403
    in_thread(
        lambda: enqueue_many("examples", "example.long", [{"steps": 0}], user=bob)
    )
    in_thread(
        lambda: enqueue_many("examples", "example.long", [{"steps": 0}], user=alice)
    )
    expect(page.locator("#new-tasks")).to_have_text("1 new task — show")
    expect(page.locator('[data-counter="succeeded"] dd')).to_have_text("4")
    expect(page.locator('[data-counter="dead"] dd')).to_have_text("0")
    no_horizontal_overflow(page)
    page.screenshot(path=str(output_dir / f"alice-{size}.png"), full_page=True)
