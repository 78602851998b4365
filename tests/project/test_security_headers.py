"""HTTP hardening: CSP, no-store, HTTPS only, login throttling, deploy checks."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse

from project.checks import DEV_PASSWORD, DEV_USER, check_development_login
from retrying_consumers import store
from tests.project.entrypoints import run

pytestmark = pytest.mark.django_db

SECRET = "a-long-random-secret-for-the-deploy-check-" + "Zq9xWv" * 8


@pytest.fixture(autouse=True)
def _redis(redis_client: Any) -> None:
    pass


def staff_client() -> Client:
    boss = get_user_model().objects.create_superuser("boss", "", "right-Pw-31337")
    client = Client()
    client.force_login(boss)
    return client


def test_pages_have_a_content_security_policy_without_inline_script() -> None:
    client = staff_client()
    for url in (reverse("dashboard"), reverse("login"), "/admin/"):
        policy = client.get(url)["Content-Security-Policy"]
        directives = dict(
            part.strip().split(" ", 1) for part in policy.split(";") if part.strip()
        )
        assert directives["script-src"] == "'self'", url
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in policy


def test_pages_that_show_payloads_are_not_stored() -> None:
    client = staff_client()
    task, _ = store.create_task(
        channel="work", type="job.run", payload={"secret": 1}, ring_timeout=30
    )
    for url in (reverse("dashboard"), reverse("task-detail", args=[task.id])):
        response = client.get(url)
        assert response.status_code == 200
        controls = {part.strip() for part in response["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= controls, url
    static = client.get("/static/realtime/dashboard.js")
    assert "no-store" not in static.get("Cache-Control", "")


def test_https_only_redirects_and_sends_hsts(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    plain = Client().get(reverse("login"))
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    secure = Client().get(reverse("login"), secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000"


def deploy_warnings(**env: str) -> str:
    result = run(
        ["manage.py", "check", "--deploy"],
        SECRET_KEY=SECRET,
        DJANGO_DEBUG="0",
        SECURE_COOKIES="1",
        **env,
    )
    return result.stdout + result.stderr


def test_a_tls_deployment_passes_the_https_deploy_checks() -> None:
    assert "security.W004" in deploy_warnings(BEHIND_TLS_PROXY="0")
    output = deploy_warnings(BEHIND_TLS_PROXY="1")
    assert "security.W004" not in output and "security.W008" not in output
    assert "System check identified no issues" in deploy_warnings(
        HTTPS_ONLY="1", HSTS_INCLUDE_SUBDOMAINS="1", HSTS_PRELOAD="1"
    )


def log_in(client: Client, username: str, password: str) -> Any:
    return client.post(reverse("login"), {"username": username, "password": password})


def test_wrong_passwords_lock_the_login_out(settings: Any) -> None:
    get_user_model().objects.create_user("alice", password="right-Pw-31337")
    get_user_model().objects.create_user("bob", password="right-Pw-31337")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "alice", "wrong").status_code == 200  # the form again
    assert log_in(client, "alice", "wrong").status_code == 429
    for _ in range(40):
        log_in(client, "alice", "wrong")
    locked = log_in(client, "alice", "right-Pw-31337")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Others are not locked out by alice's attacker.
    assert log_in(Client(), "bob", "right-Pw-31337").status_code == 302


def test_a_right_password_resets_the_count(settings: Any) -> None:
    get_user_model().objects.create_user("alice", password="right-Pw-31337")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(Client(), "alice", "wrong")
    assert log_in(Client(), "alice", "right-Pw-31337").status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(Client(), "alice", "wrong")
    assert log_in(Client(), "alice", "right-Pw-31337").status_code == 302


def test_the_development_login_fails_the_deploy_check(settings: Any) -> None:
    settings.DEBUG = False
    assert check_development_login() == []
    dev = get_user_model().objects.create_superuser(DEV_USER, "", DEV_PASSWORD)
    assert [e.id for e in check_development_login()] == ["project.E001"]
    with pytest.raises(SystemCheckError, match=r"project\.E001"):
        call_command("check", deploy=True)
    dev.set_password("a-new-strong-Pw-31337")
    dev.save()
    assert check_development_login() == []
    settings.DEBUG = True  # development mode is what the login is for
    dev.set_password(DEV_PASSWORD)
    dev.save()
    assert check_development_login() == []
