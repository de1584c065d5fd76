"""The layering the import contracts promise, checked where import-linter cannot look.

``lint-imports`` (run by bin/test) checks the packages; these tests cover ``worker.py`` (a
single module, which import-linter only sees from outside), the rule that no project import
hides inside a function, and that a backward import really breaks the contracts.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("altaviz", "worker", "activities", "etl", "rules", "workflows", "bench", "tests")
PRODUCTION = ("altaviz", "activities", "etl", "rules", "workflows")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every absolute import in ``path``."""
    found: list[tuple[str, int, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, child.lineno, in_function))
            walk(child, inner)

    walk(ast.parse(path.read_text(), str(path)), False)
    return found


def test_worker_imports_nothing_from_the_application_layer() -> None:
    above = ("altaviz.app", "altaviz.simulator", "bench", "tests")
    bad = [(m, line) for m, line, _ in _imports(ROOT / "worker.py")
           if m == "altaviz" or m.startswith(above)]
    assert bad == [], f"worker.py imports from a layer above it: {bad}"


def test_no_project_import_inside_a_function() -> None:
    files = [ROOT / "worker.py"] + [p for pkg in PRODUCTION for p in (ROOT / pkg).rglob("*.py")]
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for p in files
           for m, line, inside in _imports(p) if inside and m.split(".")[0] in PROJECT]
    assert bad == [], "project imports inside functions (hoist them; a cycle means a layer " \
                      "is wrong):\n" + "\n".join(bad)


def test_a_backward_import_breaks_the_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".altaviz", "tests", "bench", "docs", "*_cache", "__pycache__"))
    (copy / "tests").mkdir()
    (copy / "tests" / "__init__.py").write_text("")
    (copy / "bench").mkdir()
    (copy / "bench" / "__init__.py").write_text("")
    lint = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
            "lint_imports_command()", "--no-cache"]
    ok = subprocess.run(lint, cwd=copy, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    payloads = copy / "altaviz" / "core" / "payloads.py"
    payloads.write_text(payloads.read_text() + "\nfrom workflows import TASK_QUEUE  # noqa\n")
    broken = subprocess.run(lint, cwd=copy, capture_output=True, text=True)
    assert broken.returncode != 0
    assert "altaviz.core.payloads -> workflows" in broken.stdout
