"""System checks that the library registers (retrying_consumers.checks).

Each test runs Django's check registry (the library's tag, which needs no
database: the tests have none, which also proves that loading the ASGI
application does not touch it), so a check that the app does not register
fails its test as surely as a wrong one.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from retrying_consumers import checks as rc_checks
from retrying_consumers import startup

APPS = "tests.retrying_consumers.check_apps"
CORE = "channels_redis.core.RedisChannelLayer"
PUBSUB = "channels_redis.pubsub.RedisPubSubChannelLayer"
URL = "redis://127.0.0.1:6379/0"


def library_messages() -> list[checks.CheckMessage]:
    """What the registered checks of the library's tag say."""
    return checks.run_checks(tags=[rc_checks.TAG])


def found(check_id: str) -> list[checks.CheckMessage]:
    return [m for m in library_messages() if m.id == check_id]


def test_the_library_registers_its_checks() -> None:
    assert rc_checks.TAG in checks.registry.registry.tags_available()
    assert library_messages() == []


@pytest.mark.django_db
def test_the_project_passes_every_check_with_no_message() -> None:
    call_command("check", fail_level="WARNING")


# E001: the library's runworker must be the one Django runs.


def test_channels_before_the_library_is_an_error(settings: Any) -> None:
    apps = [a for a in settings.INSTALLED_APPS if a != "retrying_consumers"]
    at = apps.index("channels")
    wrong = [*apps[:at], "channels", "retrying_consumers", *apps[at + 1 :]]
    with override_settings(INSTALLED_APPS=wrong):
        assert rc_checks.runworker_app() == "channels"
        (error,) = found("retrying_consumers.E001")
    assert error.level == checks.ERROR
    assert "'channels' comes before 'retrying_consumers'" in error.msg
    assert "before 'channels'" in error.hint


def test_the_library_first_runs_its_own_runworker() -> None:
    # Django takes the first installed app with the command (get_commands).
    from django.core.management import get_commands

    assert get_commands()["runworker"] == "retrying_consumers"
    assert rc_checks.runworker_app() == "retrying_consumers"
    assert found("retrying_consumers.E001") == []


# E002: channels-redis hosts without socket_timeout None under redis-py 8.


def layers(hosts: Any, backend: str = CORE) -> dict[str, Any]:
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": hosts}}}


@pytest.mark.parametrize(
    ("hosts", "advice"),
    [
        ([URL], "A URL cannot set it"),
        ([("127.0.0.1", 6379)], '{"address": "redis://<host>:<port>"'),
        ([{"address": URL}], 'Add "socket_timeout": None'),
        ([{"address": URL, "socket_timeout": 5}], 'Add "socket_timeout": None'),
        (
            [{"address": URL + "?socket_timeout=5", "socket_timeout": None}],
            "Remove socket_timeout from the address URL",
        ),
        ([{"host": "127.0.0.1", "port": 6379}], 'Add "socket_timeout": None'),
        (
            [
                {
                    "sentinels": [("127.0.0.1", 26379)],
                    "master_name": "mymaster",
                    "sentinel_kwargs": {"socket_timeout": None},
                }
            ],
            'beside "master_name"',
        ),
        ([], '"hosts": [{"address": "redis://localhost:6379"'),
    ],
)
def test_a_host_with_the_socket_timeout_is_an_error(hosts: Any, advice: str) -> None:
    with override_settings(CHANNEL_LAYERS=layers(hosts)):
        (error,) = found("retrying_consumers.E002")
    assert error.level == checks.ERROR
    assert error.msg.startswith("CHANNEL_LAYERS['default'] ")
    assert "socket_timeout to None" in error.msg
    assert advice in error.hint


def test_each_bad_host_is_named() -> None:
    good = {"address": URL, "socket_timeout": None}
    with override_settings(CHANNEL_LAYERS=layers([good, URL, good, URL])):
        errors = found("retrying_consumers.E002")
    assert [e.msg.split(" does not")[0] for e in errors] == [
        "CHANNEL_LAYERS['default'] host 1",
        "CHANNEL_LAYERS['default'] host 3",
    ]


@pytest.mark.parametrize(
    "layer",
    [
        layers([{"address": URL, "socket_timeout": None}]),
        layers(
            [
                {
                    "sentinels": [("127.0.0.1", 26379)],
                    "master_name": "mymaster",
                    "socket_timeout": None,
                }
            ]
        ),
        # The pub/sub layer reads with its own 0.1 s timeout.
        layers([URL], backend=PUBSUB),
        {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    ],
)
def test_hosts_without_the_timeout_pass(layer: dict[str, Any]) -> None:
    with override_settings(CHANNEL_LAYERS=layer):
        assert found("retrying_consumers.E002") == []


def test_a_subclass_of_the_redis_layer_is_checked() -> None:
    backend = "tests.retrying_consumers.check_apps.layers.ProjectLayer"
    with override_settings(CHANNEL_LAYERS=layers([URL], backend=backend)):
        assert len(found("retrying_consumers.E002")) == 1


def test_redis_py_before_8_needs_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rc_checks, "redis_version", lambda: "7.4.0")
    with override_settings(CHANNEL_LAYERS=layers([URL])):
        assert found("retrying_consumers.E002") == []


# W001 and E003: the worker channels of ASGI_APPLICATION.


def test_a_plain_consumer_on_a_worker_channel_is_a_warning() -> None:
    with override_settings(ASGI_APPLICATION=f"{APPS}.routes.application"):
        warnings = found("retrying_consumers.W001")
    assert [w.level for w in warnings] == [checks.WARNING] * 2
    assert [w.msg.split(" is routed")[0] for w in warnings] == [
        "worker channel 'plain'",
        "worker channel 'wrapped'",
    ]
    assert warnings[0].obj == f"{APPS}.routes.PlainConsumer"
    assert "RetryMixin" in warnings[0].hint
    assert "SILENCED_SYSTEM_CHECKS" in warnings[0].hint


def test_the_warning_can_be_silenced() -> None:
    app = f"{APPS}.routes.application"
    with override_settings(ASGI_APPLICATION=app):
        with pytest.raises(SystemCheckError, match=r"retrying_consumers\.W001"):
            call_command("check", tags=[rc_checks.TAG], fail_level="WARNING")
        with override_settings(SILENCED_SYSTEM_CHECKS=["retrying_consumers.W001"]):
            call_command("check", tags=[rc_checks.TAG], fail_level="WARNING")


def test_an_application_without_worker_channels_passes() -> None:
    with override_settings(ASGI_APPLICATION=f"{APPS}.routes.no_channels"):
        assert library_messages() == []


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (f"{APPS}.broken.application", "ModuleNotFoundError: No module named"),
        (f"{APPS}.exits.application", "importing it exited with status 2"),
        (f"{APPS}.routes.missing", "ImportError: Module"),
        (None, "ASGI_APPLICATION is not set"),
    ],
)
def test_an_application_that_cannot_load_is_an_error(
    path: str | None, problem: str
) -> None:
    with override_settings(ASGI_APPLICATION=path):
        (error,) = found("retrying_consumers.E003")
    assert error.level == checks.ERROR
    assert problem in error.msg
    assert "fix ASGI_APPLICATION" in error.hint


def test_database_checks_are_skipped_while_inspecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(startup, "_database_check", lambda: "no database")
    with pytest.raises(startup.StartupError, match="no database"):
        startup.check_database()
    with startup.inspecting():
        startup.check_database()
