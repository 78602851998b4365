from __future__ import annotations

import subprocess
import sys

import pytest

from project.devrun import BASE_DIR
from retrying_consumers.conf import LibrarySettings, library_settings
from retrying_consumers.exceptions import ConfigurationError


def test_defaults(settings) -> None:
    settings.RETRYING_CONSUMERS = {}
    lib = library_settings()
    assert lib == LibrarySettings()
    assert (lib.ring_timeout, lib.lease_seconds, lib.worker_concurrency) == (30, 30, 32)


def test_overrides(settings) -> None:
    settings.RETRYING_CONSUMERS = {"LEASE_SECONDS": 5, "STORE_RESULTS": False}
    lib = library_settings()
    assert lib.lease_seconds == 5
    assert lib.store_results is False


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"LEASE_SECOND": 5}, "unknown option(s) LEASE_SECOND"),
        ({"LEASE_SECONDS": "5"}, "'LEASE_SECONDS'] must be a number"),
        ({"RING_TIMEOUT": 0}, "'RING_TIMEOUT'] must be > 0"),
        ({"WORKER_CONCURRENCY": True}, "must be a number"),
        ({"LEASE_SECONDS": float("nan")}, "'LEASE_SECONDS'] must be a finite number"),
        ({"GRACE_PERIOD": float("inf")}, "'GRACE_PERIOD'] must be a finite number"),
        ({"RING_TIMEOUT": -float("inf")}, "'RING_TIMEOUT'] must be a finite number"),
        ({"PURGE_DEAD_AFTER": float("nan")}, "'PURGE_DEAD_AFTER'] must be a finite"),
        ({"NOTIFY_INTERVAL": 1e300}, "'NOTIFY_INTERVAL'] must be at most"),
        ({"WORKER_CONCURRENCY": 2.5}, "'WORKER_CONCURRENCY'] must be a whole number"),
        ({"TRACEBACK_LIMIT": 1e9}, "'TRACEBACK_LIMIT'] must be a whole number"),
        ({"STORE_RESULTS": 1}, "'STORE_RESULTS'] must be True or False"),
        ({"METRICS_TOKEN": 5}, "'METRICS_TOKEN'] must be a non-empty string"),
    ],
)
def test_bad_options(settings, options, words) -> None:
    settings.RETRYING_CONSUMERS = options
    with pytest.raises(ConfigurationError) as err:
        library_settings()
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["runworker", "bad channel!"], "invalid channel name(s): bad channel!"),
        (["runworker", "examples", "--concurrency", "0"], "must be more than 0"),
        (["runworker", "examples", "--grace-period", "soon"], "is not a number"),
        (["runworker"], "the following arguments are required: channels"),
    ],
)
def test_runworker_refuses_bad_arguments(args: list[str], words: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert words in lines[0]
