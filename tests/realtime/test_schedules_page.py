"""The schedules page: staff see every periodic task with its next and last run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from retrying_consumers import schedules, ticking

pytestmark = pytest.mark.django_db

DECLARED = {
    "nightly": {
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "channel": "reports",
        "type": "report.build",
    },
    "minutely": {"every": 60, "channel": "reports", "type": "report.ping"},
}


@pytest.fixture(autouse=True)
def declared(settings: Any, redis_client: Any) -> Any:
    settings.RETRYING_CONSUMERS = {"SCHEDULES": DECLARED}
    yield
    schedules.all_schedules.cache_clear()


def client_for(staff: bool) -> Client:
    name = "staff" if staff else "user"
    user = get_user_model().objects.create_user(name, password="x", is_staff=staff)
    client = Client()
    client.force_login(user)
    return client


def test_only_staff_see_the_page() -> None:
    url = reverse("schedules")
    assert Client().get(url).status_code == 302  # to the login page
    assert client_for(staff=False).get(url).status_code == 302
    assert client_for(staff=True).get(url).status_code == 200


def test_the_page_lists_each_schedule_with_its_last_task() -> None:
    [task_id] = ticking.run_due_schedules(datetime.now(UTC))  # minutely's tick
    page = client_for(staff=True).get(reverse("schedules")).content.decode()
    assert 'data-schedule="nightly"' in page and "0 3 * * *" in page
    assert "Europe/Berlin" in page and "reports:report.build" in page
    detail = reverse("task-detail", args=[task_id])
    assert f'href="{detail}"' in page and "status-queued" in page
    assert page.count("not yet") == 1  # nightly has not run


def test_the_json_rows_are_those_of_the_command() -> None:
    ticking.run_due_schedules(datetime.now(UTC))
    data = client_for(staff=True).get(reverse("schedules"), {"format": "json"}).json()
    assert data["problem"] == ""
    assert [row["name"] for row in data["schedules"]] == ["minutely", "nightly"]
    assert data["schedules"][0]["last_status"] == "queued"


def test_a_bad_declaration_is_shown_not_a_server_error(settings: Any) -> None:
    settings.RETRYING_CONSUMERS = {
        "SCHEDULES": {"bad": {"cron": "x", **DECLARED["minutely"]}}
    }
    response = client_for(staff=True).get(reverse("schedules"))
    assert response.status_code == 200
    assert "periodic task &#x27;bad&#x27;" in response.content.decode()


def test_the_nav_links_to_the_page_for_staff_only() -> None:
    url = reverse("schedules")
    assert (
        f'href="{url}"'
        in client_for(staff=True).get(reverse("dashboard")).content.decode()
    )
    assert (
        f'href="{url}"'
        not in client_for(staff=False).get(reverse("dashboard")).content.decode()
    )


def test_the_page_lists_the_declared_limits_with_running_and_waiting(
    settings: Any,
) -> None:
    from tests.retrying_consumers.ops_factories import make

    settings.ASGI_APPLICATION = "tests.e2e.fault_app.application"
    make("running", channel="fault-a", type="fault.limited")
    make("queued", channel="fault-a", type="fault.limited")
    page = client_for(staff=True).get(reverse("schedules"))
    html = page.content.decode()
    assert 'data-limit="fault-a:fault.limited"' in html
    row = html.split('data-limit="fault-a:fault.limited"')[1].split("</tr>")[0]
    assert [cell for cell in row.split("<td>")[1:]] == [
        "fault-a</td>",
        "<code>fault.limited</code></td>",
        "5</td>",
        "-</td>",
        "1</td>",
        "1</td>",
    ]
    limits = client_for(staff=False).get(reverse("schedules") + "?format=json")
    assert limits.status_code == 302, "staff only"
