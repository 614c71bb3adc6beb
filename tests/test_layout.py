"""The one-way architecture: core ← data_prep ← systems ← fusion ← submit ← eval, walked with ast."""
from __future__ import annotations

import ast
import re

from .conftest import ROOT

CHAIN = ("core", "data_prep", "systems", "fusion", "submit", "eval")


def imported_packages(path) -> set[str]:
    """Top-level kit packages a module imports (absolute, relative and inside functions)."""
    tree = ast.parse(path.read_text())
    own = path.relative_to(ROOT).parts[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(own if node.level else (node.module or "").split(".")[0])
    return found & set(CHAIN)


def kit_modules():
    for package in CHAIN:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_module_imports_a_later_stage():
    back_edges = []
    for path in kit_modules():
        own = CHAIN.index(path.relative_to(ROOT).parts[0])
        for target in imported_packages(path):
            if CHAIN.index(target) > own:
                back_edges.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not back_edges, back_edges


def test_the_walk_sees_back_edges(tmp_path):
    """The checker itself: a module of an earlier stage importing a later one is reported."""
    probe = ROOT / "core" / "_layout_probe.py"
    probe.write_text("def f():\n    from fusion.scorers import REGISTRY\n    return REGISTRY\n")
    try:
        assert imported_packages(probe) == {"fusion"}
    finally:
        probe.unlink()


def test_ground_floor_imports_no_stage():
    for path in sorted((ROOT / "core").rglob("*.py")):
        assert imported_packages(path) <= {"core"}, path


def test_nothing_imports_the_report():
    for path in kit_modules():
        text = path.read_text()
        assert not re.search(r"(from eval\.report|import eval\.report|from eval import report)", text), path


def test_no_hook_probing_in_systems():
    """Hooks are methods with defaults (systems/common/base.py), never probed with hasattr."""
    for path in sorted((ROOT / "systems").rglob("*.py")):
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr"]
        assert not calls, path


def test_ground_floor_has_no_import_time_side_effects():
    """Importing core must not change the process (the umask used to be flipped at import)."""
    import subprocess
    import sys

    code = ("import os, pkgutil, importlib, core\n"
            "before = os.umask(0o027); os.umask(before)\n"
            "[importlib.import_module('core.' + m.name) for m in pkgutil.iter_modules(core.__path__)]\n"
            "after = os.umask(0o027); os.umask(after)\n"
            "print(before == after)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
