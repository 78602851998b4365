"""Log formatters: readable ``key=value`` text, or one JSON object per line.

The library's messages are already ``key=value`` text, with the same fields in
``extra=``. :class:`JsonFormatter` writes those fields as JSON keys, so a log
pipeline can filter on ``task_id`` or ``error_class`` without parsing text::

    {"time": "2026-11-21T10:56:48.793+00:00", "level": "INFO",
     "logger": "retrying_consumers.tasks", "message": "attempt failed, ...",
     "task_id": "6f41...", "channel": "thumbnails", "task_type": "thumbnail.generate",
     "attempt": 1, "max_attempts": 5, "error_class": "ConnectionError", ...}

(one line per record in the real output). Select it with ``LOG_FORMAT=json``.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

#: The attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

#: Task fields, written first when a record has them.
TASK_FIELDS = (
    "task_id",
    "channel",
    "task_type",
    "attempt",
    "max_attempts",
    "next_attempt_at",
    "error_class",
    "error_message",
    "outcome",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then extras.

    Values that JSON cannot hold are written as text. A traceback, when the
    record has one, is under ``"traceback"``; newlines in it are escaped, so a
    record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed in ``extra=``, task fields first."""
    extras = {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }
    ordered = {key: extras.pop(key) for key in TASK_FIELDS if key in extras}
    ordered.update(extras)
    return ordered


class ExceptLoggers(logging.Filter):
    """Passes the records of every logger but ``names`` and their children.

    For a handler on a parent logger that should not act on some of its
    children, e.g. Django's ``mail_admins`` on ``django`` but not on
    ``django.tasks``, whose failed tasks ``NOTIFY_DEAD`` reports.
    """

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.prefixes = tuple(f"{name}." for name in self.names)

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record of one of ``names`` or their children."""
        name = record.name
        return name not in self.names and not name.startswith(self.prefixes)


def configure_logging(config: dict[str, Any]) -> None:
    """``LOGGING_CONFIG`` for one formatted line per record, warnings included.

    ``logging.config.dictConfig(config)``, and Python's warnings (such as a
    library's ``UserWarning``) logged on ``py.warnings`` instead of printed
    as raw text, so that they go through the same handlers and formatter.
    """
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
