"""Real daphne and runworker processes against the test Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.sync.client import connect

from tests.processes import process_env, running, start_daphne, start_worker, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def session_cookie() -> str:
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def open_socket(port: int, cookie: str | None):
    headers = {"Cookie": cookie} if cookie else {}
    return connect(
        f"ws://127.0.0.1:{port}/ws/tasks/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers=headers,
        open_timeout=10,
    )


def test_websocket_reaches_a_worker_and_back(tmp_path: Path) -> None:
    cookie = session_cookie()
    env = process_env()
    daphne, port = start_daphne(env, tmp_path)
    worker = start_worker(env, tmp_path, ["realtime-ping"])
    with running([daphne, worker]), open_socket(port, cookie) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello == {
            "type": "hello",
            "protocol": 1,
            "user": "alice",
            "staff": False,
        }
        ws.send(json.dumps({"action": "ping", "id": "p1"}))
        pong = json.loads(ws.recv(timeout=15))
        assert pong["type"] == "pong"
        assert pong["id"] == "p1"
        assert pong["worker"].endswith(f":{worker.process.pid}")


def test_anonymous_and_foreign_origin_sockets_are_refused(tmp_path: Path) -> None:
    from websockets.exceptions import InvalidStatus

    cookie = session_cookie()
    daphne, port = start_daphne(process_env(), tmp_path)
    with running([daphne]):
        with pytest.raises(InvalidStatus) as anonymous:
            open_socket(port, None)
        assert anonymous.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as foreign:
            connect(
                f"ws://127.0.0.1:{port}/ws/tasks/",
                origin="http://evil.example",
                additional_headers={"Cookie": cookie},
                open_timeout=10,
            )
        assert foreign.value.response.status_code == 403


def test_idle_worker_survives_redis_socket_timeout(tmp_path: Path) -> None:
    """redis-py 8's 5 s socket timeout must not kill a worker blocked in BZPOPMIN."""
    cookie = session_cookie()
    env = process_env()
    daphne, port = start_daphne(env, tmp_path)
    worker = start_worker(env, tmp_path, ["realtime-ping"])
    with running([daphne, worker]):
        started = time.monotonic()
        wait_until(
            lambda: time.monotonic() - started > 20 or not worker.alive(),
            30,
            "20 idle seconds",
        )
        assert worker.alive(), worker.output()
        with open_socket(port, cookie) as ws:
            ws.recv(timeout=10)
            ws.send(json.dumps({"action": "ping", "id": "late"}))
            assert json.loads(ws.recv(timeout=15))["id"] == "late"
