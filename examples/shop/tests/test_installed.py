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


def test_the_demo_apps_are_not_needed() -> None:
    assert "project" not in sys.modules
    assert "realtime" not in sys.modules
    # The wheel ships them too; the shop imports neither.
    for name in ("project", "realtime"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" in str(spec.origin)
