"""Log lines: JSON objects with the task fields, and the LOG_FORMAT setting."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest

from project.devrun import BASE_DIR
from retrying_consumers.logformat import JsonFormatter
from retrying_consumers.logs import log_failure
from retrying_consumers.models import Status, TaskRecord
from retrying_consumers.policy import Action, Decision

NEXT = datetime(2026, 11, 21, 10, 56, 58, tzinfo=UTC)


class Lines(logging.Handler):
    """Keeps what the JSON formatter makes of each record."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger("retrying_consumers")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def task(status: str = Status.RETRYING) -> TaskRecord:
    return TaskRecord(
        id=uuid.UUID("6f414ab0-79ec-476b-ba93-74eeb45262fc"),
        channel="thumbnails",
        type="thumbnail.generate",
        status=status,
        attempt=2,
        max_attempts=5,
        due_at=NEXT,
    )


def raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_a_retry_line_is_one_json_object_with_the_task_fields(lines) -> None:
    error = raised(ConnectionError("service unavailable"))
    log_failure(task(), error, Decision(Action.RETRY, 20.0, "backoff"))

    [line] = lines
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "retrying_consumers.tasks"
    assert entry["message"].startswith("attempt failed, retrying: task_id=6f414ab0")
    assert {key: entry[key] for key in list(entry)[4:13]} == {
        "task_id": "6f414ab0-79ec-476b-ba93-74eeb45262fc",
        "channel": "thumbnails",
        "task_type": "thumbnail.generate",
        "attempt": 2,
        "max_attempts": 5,
        "next_attempt_at": "2026-11-21T10:56:58+00:00",
        "error_class": "ConnectionError",
        "error_message": "service unavailable",
        "outcome": "retry",
    }
    assert "traceback" not in entry
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None


def test_a_give_up_line_carries_the_traceback_on_one_line(lines) -> None:
    error = raised(ValueError("bad image\nwith a second line"))
    log_failure(task(Status.DEAD), error, Decision(Action.GIVE_UP, None, "no more"))

    [line] = lines
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["outcome"] == "give_up"
    assert entry["next_attempt_at"] is None
    assert entry["error_message"] == "bad image\nwith a second line"
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    assert entry["traceback"].rstrip().endswith("with a second line")


def test_other_extras_are_kept_and_odd_values_become_text(lines) -> None:
    logger = logging.getLogger("retrying_consumers.worker")
    logger.warning(
        "poison message dropped: channel=%s", "x", extra={"channel": "x", "at": NEXT}
    )
    entry = json.loads(lines[0])
    assert entry["message"] == "poison message dropped: channel=x"
    assert entry["channel"] == "x"
    assert entry["at"] == "2026-11-21 10:56:58+00:00"
    assert "args" not in entry and "msg" not in entry and "taskName" not in entry


def run_with(log_format: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('retrying_consumers.tasks').warning("
        "'task dead: task_id=%s', 'abc', extra={'task_id': 'abc', 'attempt': 3})"
    )
    env = {
        **os.environ,
        "LOG_FORMAT": log_format,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_log_format_json_from_the_environment() -> None:
    result = run_with("json")
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["task_id"], entry["attempt"]) == ("abc", 3)
    assert entry["message"] == "task dead: task_id=abc"


def test_log_format_text_is_the_default_key_value_line() -> None:
    result = run_with("text")
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert line.split(" ", 2)[2] == (
        "WARNING retrying_consumers.tasks task dead: task_id=abc"
    )


def test_a_bad_log_format_is_one_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: LOG_FORMAT='xml' is not a log format; use text or json"
    )
