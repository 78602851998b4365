"""What a worker loads: nothing it only needs in tests (memory per worker)."""

from __future__ import annotations

import subprocess
import sys

from project.devrun import BASE_DIR

LOAD_A_WORKER = """
import sys
import django
django.setup()
from django.core.management import load_command_class
load_command_class("retrying_consumers", "runworker")
import project.routing  # the routes of the ASGI app runworker serves
from retrying_consumers.running import worker  # noqa: F401
print(sorted(m for m in ("django.test", "unittest", "xml.dom") if m in sys.modules))
"""


def test_a_worker_does_not_load_django_test() -> None:
    # django.test brings unittest, xml.dom and the test client: 2.4 MB that
    # only eager runs (retrying_consumers.testing) need.
    result = subprocess.run(
        [sys.executable, "-c", LOAD_A_WORKER],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
