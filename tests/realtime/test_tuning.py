"""daphne's garbage collector: start-up heap frozen, young passes less often."""

from __future__ import annotations

import gc
import runpy
import sys

import pytest

from project.devrun import BASE_DIR
from realtime import tuning
from realtime.tuning import YOUNG_THRESHOLD, tune_garbage_collector


def test_the_startup_heap_is_frozen_garbage_is_not_and_young_passes_are_rarer() -> None:
    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # type: ignore[attr-defined]
    ref_count_before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    del garbage
    try:
        tune_garbage_collector()
        frozen = gc.get_freeze_count()
        assert frozen > ref_count_before
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
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
        gc.set_threshold(*thresholds)


def test_a_higher_young_threshold_already_set_is_kept() -> None:
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD * 2, 5, 5)
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (YOUNG_THRESHOLD * 2, 5, 5)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.django_db
def test_the_project_asgi_module_freezes_its_heap_once_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``project/asgi.py`` (what daphne imports) freezes after the app is built."""
    seen: list[bool] = []

    def record() -> None:
        # Called from the module's top level: the app exists by then.
        seen.append("application" in sys._getframe(1).f_globals)

    monkeypatch.setattr(tuning, "tune_garbage_collector", record)
    runpy.run_path(str(BASE_DIR / "project" / "asgi.py"))
    assert seen == [True]
