"""The 'make run' launcher: everything starts, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from datetime import datetime
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


# Step 4 of the README's tour, run beside `make run` exactly as written there.
TOUR_STEP_4 = """
from retrying_consumers import enqueue
enqueue('examples', 'example.flaky', {'fail_times': 2})
"""


def flaky_tasks(database: Path) -> list[tuple[str, str, list[str]]]:
    """(status, created_at, [attempt start times]) of each example.flaky task."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        tasks = db.execute(
            "SELECT id, status, created_at FROM retrying_consumers_taskrecord "
            "WHERE type = 'example.flaky'"
        ).fetchall()
        return [
            (
                status,
                created_at,
                [
                    row[0]
                    for row in db.execute(
                        "SELECT started_at FROM retrying_consumers_attemptrecord "
                        "WHERE task_id = ? ORDER BY number",
                        (task_id,),
                    )
                ],
            )
            for task_id, status, created_at in tasks
        ]


def run_the_tour_step(env: dict[str, str], data: Path) -> None:
    """The shell command of step 4 reaches the workers of `make run` at once."""
    tour = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", TOUR_STEP_4],
        cwd=BASE_DIR,
        env=env,  # no REDIS_URL, as in the README
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tour.returncode == 0, tour.stderr
    database = data / "db.sqlite3"
    wait_until(
        lambda: [t[0] for t in flaky_tasks(database)] == ["succeeded"],
        60,
        "the tour's task to succeed",
    )
    [(_, created_at, started)] = flaky_tasks(database)
    assert len(started) == 3  # fails twice, then succeeds
    # Rung by the shell, not again by a scheduler after RING_TIMEOUT (30 s).
    waited = datetime.fromisoformat(started[0]) - datetime.fromisoformat(created_at)
    assert waited.total_seconds() < 10


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
        run_file = tmp_path / "data" / "redis.url"
        assert run_file.read_text().split() == [
            f"redis://127.0.0.1:{redis_port}/0",
            str(run.pid),
        ]
        run_the_tour_step(env, tmp_path / "data")
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert run.wait(30) == 0, output()
        wait_until(lambda: not group_alive(run.pid), 10, "every process to stop")
        wait_until(lambda: not port_open(redis_port), 10, "the private Redis to stop")
        assert "worker stopped" in output()
        assert not run_file.exists()
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
