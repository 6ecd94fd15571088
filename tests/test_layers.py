"""Imports flow one way: app wiring and the CLI -> routes -> auth -> keys/tags/artifacts -> store
-> errors, config and ``_mlflow`` at the bottom. Nothing imports upward, and packages of one
layer do not import each other. Function-level (lazy) imports count too.

Read from the source with ``ast``; no server, no imports of the package under test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mlflow_hokusai"

# Top-level module or package -> layer (lower = more basic).
LAYERS = {
    "errors": 0,
    "config": 0,
    "_mlflow": 0,
    "text": 0,
    "metrics": 0,
    "store": 1,
    "keys": 2,
    "tags": 2,
    "artifacts": 2,
    "auth": 3,
    "routes": 4,
    "client": 4,
    "bootstrap": 5,
    "gate": 5,
    "cli": 6,
    "app": 6,
}
NO_FLASK = {"config", "text", "metrics", "_mlflow", "store", "keys", "tags", "artifacts", "client"}


def _unit(module_path: Path) -> str:
    relative = module_path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(module_path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth."""
    tree = ast.parse(module_path.read_text(), str(module_path))
    found = []
    package = ".".join(("mlflow_hokusai", *module_path.relative_to(PACKAGE).parts[:-1]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            if name == "mlflow_hokusai":  # from mlflow_hokusai import _mlflow, ...
                found.extend((node.lineno, f"mlflow_hokusai.{a.name}") for a in node.names)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in MODULES} - {"__init__"}
    assert units == set(LAYERS), units ^ set(LAYERS)


@pytest.mark.parametrize("module_path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(module_path):
    unit = _unit(module_path)
    if unit == "__init__":
        return  # the package root only re-exports the SDK lazily
    problems = []
    for line, name in _imports(module_path):
        parts = name.split(".")
        if parts[0] == "flask" and unit in NO_FLASK:
            problems.append(f"line {line}: {unit} must not import Flask")
        if parts[0] != "mlflow_hokusai" or len(parts) < 2:
            continue
        target = parts[1]
        if target == unit:
            continue
        if target not in LAYERS:
            problems.append(f"line {line}: imports unknown unit {name}")
        elif LAYERS[target] >= LAYERS[unit]:
            problems.append(
                f"line {line}: {unit} (layer {LAYERS[unit]}) imports {name} "
                f"(layer {LAYERS[target]})"
            )
    assert not problems, problems


def test_the_check_can_fail(tmp_path):
    """An upward import is caught (so the test above is not vacuous)."""
    bad = PACKAGE / "store" / "_layer_probe.py"
    bad.write_text("from mlflow_hokusai.routes import gate\n")
    try:
        with pytest.raises(AssertionError, match="store .layer 1. imports mlflow_hokusai.routes"):
            test_imports_point_down(bad)
    finally:
        bad.unlink()


def test_every_package_says_what_it_owns():
    for init in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring) > 40, f"{init.parent.name} has no package docstring"


DEVELOPMENT = PACKAGE.parent / "docs" / "development.md"


def _layout_rows() -> list[list[str]]:
    """The rows of docs/development.md's "Code layout" tables, as lists of cells."""
    text = DEVELOPMENT.read_text()
    section = text[text.index("## Code layout") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_development_guide_shows_these_layers():
    documented = {}
    for cells in _layout_rows():
        if cells[0].isdigit():
            for unit in cells[1].split(", "):
                documented[unit.strip("`")] = int(cells[0])
    assert documented == LAYERS


def test_the_development_guide_maps_every_module():
    documented = {cells[0].strip("`") for cells in _layout_rows() if cells[0].startswith("`")}
    modules = {
        str(p.relative_to(PACKAGE))
        for p in MODULES
        if p.name not in ("__init__.py", "__main__.py") or p.parent.name == "key_page"
    } | {"cli/__init__.py"}
    assert modules == documented, (
        f"not in the guide: {sorted(modules - documented)}; "
        f"in the guide, not in the package: {sorted(documented - modules)}"
    )
