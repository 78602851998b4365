"""The README's tour: a ``manage.py shell`` beside ``make run`` rings its Redis.

``make run`` writes its private Redis's URL to ``data/redis.url`` (see
``test_devrun`` for the whole tour on a real ``make run``); settings read it
when ``REDIS_URL`` is unset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from project.config import RUN_REDIS_FILE, redis_url
from tests.project.entrypoints import run

URL = "redis://127.0.0.1:6999/0"
DEFAULT = "redis://127.0.0.1:6379/0"
SHOW_REDIS = (
    "from django.conf import settings as s; "
    "print(s.REDIS_URL, s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]['address'])"
)


def gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def write_run_file(folder: Path, url: str, pid: int) -> None:
    (folder / RUN_REDIS_FILE).write_text(f"{url}\n{pid}\n")


def test_settings_use_the_redis_of_a_running_make_run(tmp_path: Path) -> None:
    write_run_file(tmp_path, URL, os.getpid())  # this test plays make run

    result = run(
        ["manage.py", "shell", "-v", "0", "-c", SHOW_REDIS],
        DATA_DIR=str(tmp_path),
        REDIS_URL="",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [URL, URL]


def test_redis_url_wins_over_a_running_make_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run_file(tmp_path, URL, os.getpid())
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7001/1")

    assert redis_url(tmp_path) == "redis://127.0.0.1:7001/1"


@pytest.mark.parametrize(
    "content",
    [None, "", URL, f"{URL}\nnot-a-pid\n", f"{URL}\n0\n", "gone"],
    ids=["no file", "empty", "no pid", "bad pid", "pid 0", "make run crashed"],
)
def test_without_a_running_make_run_the_default_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    monkeypatch.delenv("REDIS_URL")
    if content == "gone":
        write_run_file(tmp_path, URL, gone_pid())
    elif content is not None:
        (tmp_path / RUN_REDIS_FILE).write_text(content)

    assert redis_url(tmp_path) == DEFAULT


def test_a_bad_url_in_the_file_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from project.config import ConfigError

    monkeypatch.delenv("REDIS_URL")
    write_run_file(tmp_path, "localhost:6379", os.getpid())

    with pytest.raises(ConfigError, match="has scheme 'localhost'"):
        redis_url(tmp_path)
