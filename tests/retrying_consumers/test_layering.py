"""The library stands alone: a user's project has no ``project`` or ``realtime``."""

from __future__ import annotations

import ast
from pathlib import Path

import retrying_consumers

FORBIDDEN = {"project", "realtime"}
PACKAGE = Path(retrying_consumers.__file__).parent


def imported_roots(tree: ast.AST) -> set[str]:
    """The top-level packages that ``tree`` imports (relative imports skipped)."""
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", ""))
            in {"import_module", "import_string", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_the_walk_finds_every_kind_of_import() -> None:
    tree = ast.parse(
        "import project.config\n"
        "from realtime import hub\n"
        "from . import store\n"
        "import_module('project.errors')\n"
    )
    assert imported_roots(tree) == {"project", "realtime"}


def test_no_module_of_the_library_imports_the_project() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30  # the walk found the package
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(found)
        for path in sources
        if (found := imported_roots(ast.parse(path.read_text())) & FORBIDDEN)
    }
    assert offenders == {}
