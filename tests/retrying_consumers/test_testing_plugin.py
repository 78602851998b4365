"""The opt-in pytest plugin, used by a test suite outside this repository's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

USER_TESTS = """
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.tasks import TaskResultStatus

from tests import django_tasks_defs as defs


def test_the_layer_is_the_private_redis(private_redis):
    layer = get_channel_layer()
    assert layer.hosts[0]["address"] == private_redis.url
    async_to_sync(layer.send)("plugin-check", {"type": "x.y", "n": 1})
    assert async_to_sync(layer.receive)("plugin-check")["n"] == 1


@pytest.mark.django_db(transaction=True)
def test_drain_runs_what_was_enqueued(private_redis, drain):
    result = defs.flaky.enqueue(1, "v")
    assert drain(timeout=5) == 1
    assert defs.flaky.get_result(result.id).status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db(transaction=True)
def test_task_worker_runs_what_was_enqueued(private_redis, task_worker):
    task_worker("default")
    result = defs.flaky.enqueue(1, "w")
    deadline = time.monotonic() + 20
    while not defs.flaky.get_result(result.id).is_finished:
        assert time.monotonic() < deadline, "the worker did not finish the task"
        time.sleep(0.05)
    assert defs.flaky.get_result(result.id).attempts == 2
"""


@pytest.mark.timeout(120)
def test_a_suite_that_opts_in_gets_the_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = project.settings\n"
    )
    env = {
        # SQLite in its own DATA_DIR: this session's test database is in use.
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "PYTHONPATH": str(REPO),
        "DATA_DIR": str(tmp_path / "data"),
        # Nothing answers there: only the plugin's Redis can make the tests pass.
        "REDIS_URL": "redis://127.0.0.1:9/0",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "retrying_consumers.testing.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.timeout(120)
def test_without_opting_in_there_are_no_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text("def test_x(private_redis): pass\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-p",
            "no:django",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode != 0
    assert "fixture 'private_redis' not found" in done.stdout
