"""LOG_FORMAT=json: every process writes one JSON object per line, each once.

Real ``runworker`` and daphne processes, in development and production mode:
a worker runs a failing and a succeeding ``@task``, daphne serves pages, and
every line either writes to standard error must be a JSON object, none of them
twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.tasks import default_task_backend

from project.devrun import BASE_DIR, free_port
from tests import django_tasks_defs as defs
from tests.processes import port_open, process_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Process:
    """A child whose standard error is kept apart from its standard output."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path):
        self.stderr_path = folder / f"{name}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=BASE_DIR,
                env=env,
                stdout=subprocess.DEVNULL,  # daphne's access log: not logging
                stderr=stderr,
            )

    def stop(self) -> str:
        """Stop the process (SIGTERM); return its standard error."""
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.stderr_path.read_text(errors="replace")


def records(name: str, stderr: str) -> list[dict[str, Any]]:
    """Each line of ``stderr`` as a JSON object; fails on any other line."""
    found = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{name} wrote a line that is not JSON: {line!r}\n{stderr}")
        assert isinstance(record, dict), line
        found.append(record)
    twice = [r for r, n in Counter(json.dumps(r) for r in found).items() if n > 1]
    assert not twice, f"{name} wrote these records more than once: {twice}"
    return found


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize(
    ("debug", "static_root"),
    [("1", ""), ("0", ""), ("0", "missing")],
    ids=["development", "production", "no static folder"],
)
def test_every_line_is_one_json_record(
    tmp_path: Path, redis_client: Any, debug: str, static_root: str
) -> None:
    env = process_env(LOG_FORMAT="json", DJANGO_DEBUG=debug, DATA_DIR=str(tmp_path))
    if static_root:  # WhiteNoise warns (Python's warnings) in every process
        env["STATIC_ROOT"] = str(tmp_path / static_root)
    port = free_port()
    worker = Process("worker", ["manage.py", "runworker", "default"], env, tmp_path)
    daphne = Process(
        "daphne",
        [
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "project.asgi:application",
        ],
        env,
        tmp_path,
    )
    try:
        wait_until(lambda: port_open(port), 30, "daphne to listen")
        assert get(f"http://127.0.0.1:{port}/accounts/login/") == 200
        assert get(f"http://127.0.0.1:{port}/no-such-page/") == 404
        failing, succeeding = defs.doomed.enqueue(), defs.echo.enqueue(1)
        for result in (failing, succeeding):
            wait_until(
                lambda r=result: default_task_backend.get_result(r.id).is_finished,
                30,
                "the tasks to end",
            )
    finally:
        worker_stderr, daphne_stderr = worker.stop(), daphne.stop()

    logged = records("the worker", worker_stderr)
    served = records("daphne", daphne_stderr)
    # Django's own records of the tasks are among them, once each, as JSON.
    by_django = [r["message"] for r in logged if r["logger"] == "django.tasks"]
    assert sum(failing.id in m and "state=FAILED" in m for m in by_django) == 1
    assert sum(succeeding.id in m and "state=SUCCESSFUL" in m for m in by_django) == 1
    dead = [r for r in logged if r.get("task_id") == failing.id and "traceback" in r]
    assert [r["logger"] for r in dead] == ["retrying_consumers.tasks"]
    assert [r["status_code"] for r in served if r["logger"] == "django.request"] == [
        404
    ]
    warned = [r for r in logged + served if r["logger"] == "py.warnings"]
    assert len(warned) == (2 if static_root else 0), warned
    assert all("No directory at" in r["message"] for r in warned)
