"""daphne's start-up heap is frozen out of the garbage collector's full passes."""

from __future__ import annotations

import gc
import runpy
import sys

import pytest

from project.devrun import BASE_DIR
from realtime import tuning
from realtime.tuning import freeze_startup_heap


def test_the_startup_heap_is_frozen_and_garbage_is_not() -> None:
    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # type: ignore[attr-defined]
    ref_count_before = gc.get_freeze_count()
    del garbage
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen > ref_count_before
        # The collection before the freeze took the cycle out: it is not kept.
        assert not any(type(o).__name__ == "Cycle" for o in gc.get_objects())
        # Objects made afterwards are tracked and collected as usual.
        later = Cycle()
        later.me = later  # type: ignore[attr-defined]
        assert gc.is_tracked(later)
        del later
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()


@pytest.mark.django_db
def test_the_project_asgi_module_freezes_its_heap_once_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``project/asgi.py`` (what daphne imports) freezes after the app is built."""
    seen: list[bool] = []

    def record() -> None:
        # Called from the module's top level: the app exists by then.
        seen.append("application" in sys._getframe(1).f_globals)

    monkeypatch.setattr(tuning, "freeze_startup_heap", record)
    runpy.run_path(str(BASE_DIR / "project" / "asgi.py"))
    assert seen == [True]
