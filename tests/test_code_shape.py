"""Functions short enough to read in one sitting: none in the package over 60 lines, except
``app.create_app`` (the wiring, in order, on purpose). Read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlflow_hokusai"
MAX_LINES = 60
EXEMPT = {("app.py", "create_app")}


def _long_functions(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_LINES and (name, node.name) not in EXEMPT:
                found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_over_60_lines():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" not in path.parts:
            found += _long_functions(path.read_text(), str(path.relative_to(PACKAGE)))
    assert not found, found


def test_the_check_can_fail():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert _long_functions(f"def f():\n{body}\n", "probe.py") == ["probe.py:1 f (61 lines)"]
