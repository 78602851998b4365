"""The 'make run' launcher: everything starts, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from project.devrun import BASE_DIR, free_port
from tests.processes import port_open, wait_until

pytestmark = pytest.mark.e2e


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_devrun_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")
    }
    env.update(DATA_DIR=str(tmp_path / "data"), PORT=str(port), DJANGO_DEBUG="1")
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "project.devrun"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, like a terminal's foreground
        )
    output = log_path.read_text
    try:
        wait_until(
            lambda: (
                answers(f"http://127.0.0.1:{port}/accounts/login/")
                or run.poll() is not None
            ),
            90,
            "the page to answer",
        )
        wait_until(
            lambda: output().count("worker started") == 2 or run.poll() is not None,
            30,
            "two workers",
        )
        assert run.poll() is None, output()
        text = output()
        assert f"Open http://127.0.0.1:{port}/" in text
        assert "Log in as admin / admin" in text
        redis_port = int(re.search(r"Redis: redis://127.0.0.1:(\d+)/0", text)[1])
        assert port_open(redis_port)
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert run.wait(30) == 0, output()
        wait_until(lambda: not group_alive(run.pid), 10, "every process to stop")
        wait_until(lambda: not port_open(redis_port), 10, "the private Redis to stop")
        assert "worker stopped" in output()
    finally:
        if run.poll() is None or group_alive(run.pid):
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)  # reaped, so that nothing outlives the test


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PORT": "nan"}, "PORT='nan'"),
        ({"PORT": "70000"}, "PORT='70000' is out of range"),
        (
            {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/x"},
            "cannot connect to the database",
        ),
    ],
    ids=["port nan", "port out of range", "unreachable database"],
)
def test_make_run_stops_on_bad_settings_with_one_line(
    tmp_path: Path, env: dict[str, str], words: str
) -> None:
    from tests.project.entrypoints import assert_one_line_error, run

    # REDIS_URL is the test session's: no private Redis is started.
    result = run(["-m", "project.devrun"], timeout=60, DATA_DIR=str(tmp_path), **env)
    assert_one_line_error(result, words)
