"""The library under test is the installed wheel, not the source tree."""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path

import retrying_consumers


def test_the_library_comes_from_site_packages() -> None:
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(retrying_consumers.__file__).resolve()
    assert where.is_relative_to(site_packages), where
    assert Path(sys.prefix).resolve() in where.parents


def test_the_demo_project_is_not_needed() -> None:
    assert "project" not in sys.modules
    assert importlib.util.find_spec("project") is None


def test_realtime_comes_from_the_wheel_too() -> None:
    import realtime

    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert Path(realtime.__file__).resolve().is_relative_to(site_packages)
