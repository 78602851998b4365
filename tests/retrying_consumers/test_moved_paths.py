"""The modules moved into subpackages still import from their old paths."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils.module_loading import import_string

import retrying_consumers
from retrying_consumers import _moved

#: Dotted paths in the README, the docs and settings users copy.
DOCUMENTED = [
    "retrying_consumers.tasks_backend.ChannelsBackend",
    "retrying_consumers.logformat.JsonFormatter",
    "retrying_consumers.logformat.ExceptLoggers",
    "retrying_consumers.logformat.configure_logging",
    "retrying_consumers.startup.check_database",
    "retrying_consumers.audit.retry_now",
    "retrying_consumers.deletion.delete_finished",
    "retrying_consumers.tasks_consumer.django_task_routes",
    "retrying_consumers.signals.task_dead",
    "retrying_consumers.exceptions.WorkerLost",
]


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_an_old_path_is_the_module_at_its_new_path(old: str) -> None:
    new = importlib.import_module(f"retrying_consumers.{_moved.MOVED[old]}")
    assert importlib.import_module(f"retrying_consumers.{old}") is new
    assert getattr(retrying_consumers, old) is new
    assert sys.modules[f"retrying_consumers.{old}"] is new
    assert (
        new.__name__ == new.__spec__.name == f"retrying_consumers.{_moved.MOVED[old]}"
    )
    assert importlib.util.find_spec(f"retrying_consumers.{old}") is not None


def test_no_file_stands_at_an_old_path() -> None:
    package = Path(retrying_consumers.__file__).parent
    assert [old for old in _moved.MOVED if (package / f"{old}.py").exists()] == []


@pytest.mark.parametrize("path", DOCUMENTED)
def test_documented_dotted_paths_import(path: str) -> None:
    assert import_string(path) is not None


def test_a_patch_through_the_old_path_patches_the_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retrying_consumers.running import attempts

    marker = object()
    monkeypatch.setattr(
        "retrying_consumers.attempts.PROGRESS_MARKER", marker, raising=False
    )
    assert attempts.PROGRESS_MARKER is marker  # type: ignore[attr-defined]


def test_old_paths_import_first_in_a_fresh_interpreter() -> None:
    # Before anything imported the new paths, and as `from package import name`.
    code = (
        "import django; django.setup()\n"
        "from retrying_consumers import sql, store\n"
        "import retrying_consumers.worker as w\n"
        "from retrying_consumers.running import worker\n"
        "assert w is worker and store.__name__ == 'retrying_consumers.storage.store'\n"
        "import importlib.util as u\n"
        "assert u.find_spec('retrying_consumers.mixin').name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


@pytest.mark.parametrize(
    "name", ["retrying_consumers.nonexistent", "retrying_consumers.storage.worker"]
)
def test_an_unknown_name_is_still_not_found(name: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)
    assert importlib.util.find_spec(name) is None
