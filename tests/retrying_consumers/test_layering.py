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


#: The library's subpackages, bottom to top (see the README, "How it works"): a
#: module imports only from its own layer and the layers below it. The Django
#: modules at the top level (models, admin, checks, apps, signals, urls) and
#: testing/ and management/ sit outside the layers.
LAYERS = [
    "core",
    "storage",
    "messaging",
    "live",
    "producing",
    "recurring",
    "running",
    "djangotasks",
    "ops",
]


def imported_modules(tree: ast.AST, module: str) -> set[str]:
    """The full names of the library's modules that ``module`` imports."""
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("retrying_consumers.")}


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None


def library_modules() -> dict[str, ast.AST]:
    return {
        ".".join(
            ("retrying_consumers", *path.relative_to(PACKAGE).with_suffix("").parts)
        ): ast.parse(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
    }


def test_every_subpackage_is_a_layer() -> None:
    packages = {
        path.parent.name
        for path in PACKAGE.glob("*/__init__.py")
        if path.parent.name not in {"management", "migrations", "testing"}
    }
    assert packages == set(LAYERS)


def test_no_layer_imports_a_higher_one() -> None:
    offenders = []
    for module, tree in library_modules().items():
        here = layer_of(module)
        if here is None:
            continue
        for name in imported_modules(tree, module):
            there = layer_of(name)
            if there is not None and there > here:
                offenders.append(f"{module} imports {name}")
    assert offenders == []


def test_the_library_imports_its_modules_by_their_paths_now() -> None:
    from retrying_consumers._moved import MOVED

    old = {f"retrying_consumers.{name}" for name in MOVED}
    offenders = {
        module: sorted(found)
        for module, tree in library_modules().items()
        if (found := imported_modules(tree, module) & old)
    }
    assert offenders == {}


def test_no_subpackage_hides_a_name_of_the_package() -> None:
    # retrying_consumers.<name> is a module of the old layout or an export.
    from retrying_consumers._moved import MOVED

    assert set(LAYERS) & (set(MOVED) | set(retrying_consumers.__all__)) == set()
