"""``{% task_progress %}`` in a user's own page, in real headless Chromium.

A non-staff user starts tasks on the example page (realtime/progress_example.py)
and watches them, against live daphne and runworker processes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Locator, Page, expect

from retrying_consumers import enqueue
from retrying_consumers.models import Status, TaskRecord
from tests.processes import (
    Child,
    port_open,
    process_env,
    running,
    start_daphne,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Records every value the first widget's bar takes, and each widget event.
RECORD = """() => {
  window.seen = {values: [], events: []};
  const bar = document.querySelector('#tasks li [role="progressbar"]');
  new MutationObserver(() => {
    window.seen.values.push(bar.getAttribute('aria-valuenow'));
  }).observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
  for (const name of ['progress', 'retry', 'success', 'failure']) {
    document.addEventListener('task-progress:' + name, (event) => {
      window.seen.events.push({name: name, result: event.detail.result});
    });
  }
  window.notReloaded = true;
}"""


class Live:
    def __init__(
        self, base: str, port: int, env: dict[str, str], children: list[Child]
    ):
        self.base, self.port, self.env, self.children = base, port, env, children


@pytest.fixture
def live(tmp_path: Path, redis_client: Any):
    user = get_user_model().objects.create_user("alice", password="pw-alice-2026")
    env = process_env()
    daphne, port = start_daphne(env, tmp_path)
    worker = start_worker(env, tmp_path, ["examples"])
    children = [daphne, worker]
    with running(children):
        yield Live(f"http://127.0.0.1:{port}", port, env, children), user


def log_in(page: Page, base: str) -> None:
    page.goto(base + "/progress/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice-2026")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your tasks")).to_be_visible()


def newest(page: Page) -> Locator:
    return page.locator("#tasks li").first.locator("[data-rc-progress]")


def start(page: Page, button: str) -> Locator:
    page.get_by_role("button", name=re.compile(button)).click()
    widget = newest(page)
    expect(widget).to_have_attribute("data-task-id", re.compile(".+"))
    expect(widget).to_have_attribute("data-connection", "ready")
    page.evaluate(RECORD)
    return widget


def seen(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.seen")
    return result


def test_the_bar_moves_without_a_reload_and_the_result_arrives(
    browser: Any, live: tuple[Live, Any], output_dir: Path
) -> None:
    server, _ = live
    page = browser.new_page()
    page.set_default_timeout(20_000)
    log_in(page, server.base)
    widget = start(page, "Export")
    bar = widget.get_by_role("progressbar")
    expect(widget).to_have_attribute("data-status", "running")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]\d?)$"))
    page.screenshot(path=str(output_dir / "progress-widget-running.png"))
    expect(widget.locator("[data-part=status]")).to_have_text("Done")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 1 of 2")
    values = [int(v) for v in seen(page)["values"] if v is not None]
    assert values == sorted(values), values
    assert len({v for v in values if 0 < v < 100}) >= 2, values
    wait_until(lambda: any(e["name"] == "success" for e in seen(page)["events"]))
    assert [e["result"] for e in seen(page)["events"] if e["name"] == "success"] == [20]
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(output_dir / "progress-widget-done.png"))


def test_a_retry_shows_its_countdown_and_a_death_its_error(
    browser: Any, live: tuple[Live, Any]
) -> None:
    server, _ = live
    page = browser.new_page()
    page.set_default_timeout(20_000)
    log_in(page, server.base)
    widget = start(page, "Sync")
    expect(widget.locator("[data-part=status]")).to_have_text("Waiting to retry")
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 1 of 3")
    countdown = widget.locator("time[data-part=countdown]")
    expect(countdown).to_be_visible()
    expect(countdown).to_have_text(re.compile(r"^(in \d+ s|now)$"))
    expect(widget.locator("[data-part=error]")).to_contain_text("TransientError")
    expect(widget.locator("[data-part=status]")).to_have_text("Done")
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 2 of 3")
    expect(countdown).to_be_hidden()
    expect(widget.locator("[data-part=error]")).to_be_hidden()
    names = [e["name"] for e in seen(page)["events"]]
    assert "retry" in names and names[-1] == "success", names

    widget = start(page, "Import")
    expect(widget.locator("[data-part=status]")).to_have_text("Failed", timeout=30_000)
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 3 of 3")
    expect(widget.locator("[data-part=error]")).to_contain_text(
        "PermanentError: upstream rejected the request (attempt 3)"
    )
    assert [e["name"] for e in seen(page)["events"]].count("failure") == 1
    assert page.evaluate("window.notReloaded") is True


def test_two_tabs_agree(browser: Any, live: tuple[Live, Any]) -> None:
    server, _ = live
    context = browser.new_context()
    first, second = context.new_page(), context.new_page()
    for page in (first, second):
        page.set_default_timeout(20_000)
    log_in(first, server.base)
    start(first, "Export")
    second.goto(server.base + "/progress/")
    second.evaluate(RECORD)
    widgets = [newest(first), newest(second)]
    ids = {w.get_attribute("data-task-id") for w in widgets}
    assert len(ids) == 1
    for widget in widgets:
        expect(widget.get_by_role("progressbar")).to_have_attribute(
            "aria-valuenow", re.compile(r"^([1-9]\d?)$")
        )
    for widget in widgets:
        expect(widget.locator("[data-part=status]")).to_have_text("Done")
    texts = [w.inner_text() for w in widgets]
    assert texts[0] == texts[1]
    assert all(seen(page)["values"] for page in (first, second))
    context.close()


def test_after_daphne_restarts_the_page_resyncs_from_the_snapshot(
    browser: Any, live: tuple[Live, Any], tmp_path: Path
) -> None:
    server, user = live
    page = browser.new_page()
    page.set_default_timeout(20_000)
    log_in(page, server.base)
    task_id = enqueue("examples", "example.long", {"steps": 16}, user=user)
    page.reload()
    widget = newest(page)
    expect(widget).to_have_attribute("data-task-id", str(task_id))
    page.evaluate(RECORD)
    bar = widget.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]\d?)$"))

    server.children[0].stop()
    expect(widget).to_have_attribute("data-connection", "closed")
    before = bar.get_attribute("aria-valuenow")
    # The task ends while no server can tell the page: only the snapshot can.
    wait_until(
        lambda: TaskRecord.objects.get(pk=task_id).status == Status.SUCCEEDED,
        20,
        "the task to succeed",
    )
    assert widget.get_attribute("data-status") == "running"
    assert bar.get_attribute("aria-valuenow") == before
    server.children.append(restart_daphne(server, tmp_path))

    expect(widget).to_have_attribute("data-connection", "ready", timeout=40_000)
    expect(widget.locator("[data-part=status]")).to_have_text("Done")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    wait_until(lambda: any(e["name"] == "success" for e in seen(page)["events"]))
    assert page.evaluate("window.notReloaded") is True


def restart_daphne(server: Live, log_dir: Path) -> Child:
    """A new daphne on the old port, so that the page's socket finds it."""
    child = Child(
        "daphne2",
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(server.port),
            "project.asgi:application",
        ],
        server.env,
        log_dir,
    )
    wait_until(
        lambda: port_open(server.port) or not child.alive(), 20, "daphne to listen"
    )
    assert child.alive(), child.output()
    return child
