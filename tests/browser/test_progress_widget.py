"""``{% task_progress %}`` in a user's own page, in real headless Chromium.

A non-staff user starts tasks on the example page (realtime/progress_example.py)
and watches them, against live daphne and runworker processes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
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

# Installed before any page script runs, so that nothing is missed: every value
# a widget's bar takes and every widget event, with what the element showed as
# the event fired (it renders before it dispatches), by task id.
RECORD = """
window.seen = {values: [], events: []};
const shownPart = (element, part) => {
  const node = element.querySelector('[data-part="' + part + '"]');
  return node.closest('[hidden]') ? null : node.textContent;
};
new MutationObserver((changes) => {
  for (const change of changes) {
    const widget = change.target.closest('[data-rc-progress]');
    window.seen.values.push({
      id: widget && widget.dataset.taskId,
      value: change.target.getAttribute('aria-valuenow'),
    });
  }
}).observe(document, {
  attributes: true, subtree: true, attributeFilter: ['aria-valuenow'],
});
for (const name of ['progress', 'retry', 'success', 'failure']) {
  document.addEventListener('task-progress:' + name, (event) => {
    const shown = {};
    for (const part of ['status', 'attempt', 'countdown', 'error']) {
      shown[part] = shownPart(event.target, part);
    }
    window.seen.events.push({
      name: name, id: event.detail.task.id, result: event.detail.result, shown,
    });
  });
}
"""


@pytest.fixture(autouse=True)
def _patient_expect() -> Iterator[None]:
    """Tasks take seconds on a busy machine; expect's own default is 5 s."""
    expect.set_options(timeout=20_000)
    yield
    expect.set_options(timeout=5_000)


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
    """Start a task with ``button`` (the page reloads once); its widget."""
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile(button)).click()
    widget = newest(page)
    expect(widget).to_have_attribute("data-task-id", re.compile(".+"))
    expect(widget).to_have_attribute("data-connection", "ready")
    page.evaluate("window.notReloaded = true")  # gone if the page reloads
    return widget


def seen(page: Page, widget: Locator) -> dict[str, list[Any]]:
    """The values and events recorded for ``widget``'s task."""
    task_id = widget.get_attribute("data-task-id")
    recorded = page.evaluate("window.seen")
    return {
        kind: [item for item in items if item["id"] == task_id]
        for kind, items in recorded.items()
    }


def events(page: Page, widget: Locator, name: str) -> list[dict[str, Any]]:
    return [e for e in seen(page, widget)["events"] if e["name"] == name]


def new_page(browser_or_context: Any) -> Page:
    page: Page = browser_or_context.new_page()
    page.set_default_timeout(20_000)
    page.add_init_script(RECORD)
    return page


def test_the_bar_moves_without_a_reload_and_the_result_arrives(
    browser: Any, live: tuple[Live, Any], output_dir: Path
) -> None:
    server, _ = live
    page = new_page(browser)
    log_in(page, server.base)
    widget = start(page, "Export")
    bar = widget.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]\d?)$"))
    page.screenshot(path=str(output_dir / "progress-widget-running.png"))
    expect(widget.locator("[data-part=status]")).to_have_text("Done")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 1 of 2")
    values = [int(v["value"]) for v in seen(page, widget)["values"] if v["value"]]
    assert values == sorted(values), values
    assert len({v for v in values if 0 < v < 100}) >= 2, values
    wait_until(lambda: events(page, widget, "success"))
    assert [e["result"] for e in events(page, widget, "success")] == [20]
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(output_dir / "progress-widget-done.png"))


def test_a_retry_shows_its_countdown_and_a_death_its_error(
    browser: Any, live: tuple[Live, Any]
) -> None:
    server, _ = live
    page = new_page(browser)
    log_in(page, server.base)
    widget = start(page, "Sync")
    wait_until(lambda: events(page, widget, "retry"), 20, "the retry")
    [retry] = [e["shown"] for e in events(page, widget, "retry")]
    assert retry["status"] == "Waiting to retry"
    assert retry["attempt"] == "attempt 1 of 3"
    assert re.fullmatch(r"in \d+ s|now", retry["countdown"]), retry
    assert retry["error"].startswith("TransientError: service unavailable"), retry
    expect(widget.locator("[data-part=status]")).to_have_text("Done")
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 2 of 3")
    expect(widget.locator("time[data-part=countdown]")).to_be_hidden()
    expect(widget.locator("[data-part=error]")).to_be_hidden()
    wait_until(lambda: events(page, widget, "success"))

    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    widget = start(page, "Import")
    expect(widget.locator("[data-part=status]")).to_have_text("Failed", timeout=30_000)
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 3 of 3")
    expect(widget.locator("[data-part=error]")).to_contain_text(
        "PermanentError: upstream rejected the request (attempt 3)"
    )
    assert len(events(page, widget, "retry")) == 2
    # Both tasks on the page, watched over one socket.
    expect(page.locator("[data-rc-progress][data-connection=ready]")).to_have_count(2)
    assert len(sockets) == 1, sockets
    [failure] = [e["shown"] for e in events(page, widget, "failure")]
    assert (failure["status"], failure["countdown"]) == ("Failed", None)
    assert page.evaluate("window.notReloaded") is True


def test_two_tabs_agree(browser: Any, live: tuple[Live, Any]) -> None:
    server, _ = live
    context = browser.new_context()
    first, second = new_page(context), new_page(context)
    log_in(first, server.base)
    start(first, "Export")
    second.goto(server.base + "/progress/")
    widgets = [newest(first), newest(second)]
    assert len({w.get_attribute("data-task-id") for w in widgets}) == 1
    for widget in widgets:
        expect(widget.get_by_role("progressbar")).to_have_attribute(
            "aria-valuenow", re.compile(r"^([1-9]\d?)$")
        )
    for widget in widgets:
        expect(widget.locator("[data-part=status]")).to_have_text("Done")
    assert widgets[0].inner_text() == widgets[1].inner_text()
    for page, widget in zip((first, second), widgets, strict=True):
        wait_until(lambda p=page, w=widget: events(p, w, "success"))
        assert [e["result"] for e in events(page, widget, "success")] == [20]
    context.close()


def test_after_daphne_restarts_the_page_resyncs_from_the_snapshot(
    browser: Any, live: tuple[Live, Any], tmp_path: Path
) -> None:
    server, user = live
    page = new_page(browser)
    log_in(page, server.base)
    task_id = enqueue("examples", "example.long", {"steps": 24}, user=user)
    page.reload()
    page.evaluate("window.notReloaded = true")
    widget = newest(page)
    expect(widget).to_have_attribute("data-task-id", str(task_id))
    bar = widget.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]\d?)$"))

    # Killed, not stopped: a graceful stop may outlast the task, whose end
    # would then reach the page before its socket closed.
    server.children[0].process.kill()
    server.children[0].process.wait()
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
    wait_until(lambda: events(page, widget, "success"))
    assert [e["result"] for e in events(page, widget, "success")] == [24]
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


def test_without_javascript_the_element_shows_the_state_at_render(
    browser: Any, live: tuple[Live, Any]
) -> None:
    server, user = live
    task_id = enqueue("examples", "example.long", {"steps": 8}, user=user)
    wait_until(
        lambda: TaskRecord.objects.get(pk=task_id).status == Status.SUCCEEDED,
        20,
        "the task to succeed",
    )
    context = browser.new_context(java_script_enabled=False)
    page = new_page(context)
    log_in(page, server.base)
    widget = newest(page)
    expect(widget).to_have_attribute("data-task-id", str(task_id))
    expect(widget.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(widget.locator("[data-part=status]")).to_have_text("Done")
    expect(widget.locator("[data-part=attempt]")).to_have_text("attempt 1 of 2")
    assert widget.get_attribute("data-connection") is None  # no script ran
    context.close()
