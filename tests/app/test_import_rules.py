"""Arrows point inward: which room may import which.

engine/ and storage/ import neither each other, nor exports/, evaluation/, training/, the UI,
app.py or Gradio; exports/ (training examples and files, from the store) imports storage but
never the engine, evaluation/, training/, the UI, app.py or Gradio; evaluation/ imports the
engine, storage and exports but never the UI, training/, app.py or Gradio (app.py builds its
engine and hands it in); studio/ (the flows) joins the engine and storage but never the UI,
training/, app.py or Gradio. Importing evaluation/ or studio/ loads neither Gradio nor torch.
Imports inside functions count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ROOMS = ("app", "control_tokens", "engine", "evaluation", "exports", "gradio", "storage",
         "studio", "training", "ui")
FORBIDDEN = {
    "engine": {"storage", "exports", "evaluation", "studio", "training", "ui", "app", "gradio"},
    "storage": {"engine", "exports", "evaluation", "studio", "training", "ui", "app", "gradio"},
    "exports": {"engine", "evaluation", "studio", "training", "ui", "app", "gradio"},
    "evaluation": {"studio", "training", "ui", "app", "gradio"},
    "studio": {"evaluation", "training", "ui", "app", "gradio"},
}


def imported_rooms(package: str) -> dict[str, set[str]]:
    """For every module of `package`, the rooms (top-level names of ROOMS) it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = {name.split(".")[0] for name in names} & set(ROOMS)
    return found


def test_the_scan_sees_imports_inside_functions_too():
    # The page imports Gradio at the top, the evaluation runs import exports.formats inside
    # `evaluate`: a scan that missed either would pass whatever the rooms import.
    assert "gradio" in imported_rooms("ui")["ui/page.py"]
    assert "storage" in imported_rooms("evaluation")["evaluation/runs.py"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_room_imports_only_what_it_may(package):
    modules = imported_rooms(package)
    assert modules, f"no modules found in {package}/"
    crossing = {module: sorted(rooms & FORBIDDEN[package])
                for module, rooms in modules.items() if rooms & FORBIDDEN[package]}
    assert crossing == {}


@pytest.mark.parametrize("package", ["evaluation", "studio"])
def test_importing_the_room_loads_neither_gradio_nor_torch(package):
    script = (f"import importlib, pkgutil, sys, {package}\n"
              f"for module in pkgutil.iter_modules({package}.__path__):\n"
              f"    importlib.import_module('{package}.' + module.name)\n"
              "print(sorted({'gradio', 'torch', 'ui', 'app'} & set(sys.modules)))\n")
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
