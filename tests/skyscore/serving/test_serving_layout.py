"""The serving package's shape: a route table bound explicitly to a transport-neutral dataplane,
and imports that run one way (routes ← openapi ← dataplane ← transports), never in a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import skyscore.serving
from skyscore.serving import dataplane
from skyscore.serving.routes import ROUTES

SERVING = Path(skyscore.serving.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every ``skyscore.serving`` module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "skyscore.serving":
                found.update(f"skyscore.serving.{alias.name}" for alias in node.names)
            elif node.module.startswith("skyscore.serving."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("skyscore.serving."))
    return found


def test_serving_imports_have_no_cycle() -> None:
    graph = {
        f"skyscore.serving.{path.stem}": _imports(path)
        for path in SERVING.glob("*.py")
        if path.stem != "__init__"
    }
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, (*trail, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "skyscore.serving.dataplane" not in graph["skyscore.serving.openapi"]


def test_openapi_loads_without_the_dataplane() -> None:
    code = (
        "import sys; from skyscore.serving.openapi import openapi_json; openapi_json(); "
        "print('skyscore.serving.dataplane' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_route_is_bound_explicitly_to_one_handler() -> None:
    assert set(dataplane.HANDLERS) == {route.operation for route in ROUTES}
    for operation, handler in dataplane.HANDLERS.items():
        assert callable(handler), operation
    # dispatch is the table, not attribute lookup by name
    source = (SERVING / "dataplane.py").read_text()
    assert "getattr(self" not in source and '"_op_' not in source
