"""The code's shape: no function in ``hpo/``, ``trials/`` or ``storage/`` is longer than 80 lines, as ``ast``
counts them (``end_lineno - lineno + 1``, docstring included; decorators not). Past that, a function is split
along the seams it already has (STYLE.md, 13)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

LIMIT = 80
PACKAGES = ("hpo", "trials", "storage")


def long_functions(root: Path, packages: tuple[str, ...] = PACKAGES, limit: int = LIMIT) -> list[str]:
    """``path:line name (N lines)`` for each function or method under ``root/<package>`` longer than ``limit``."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > limit:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    offenders = long_functions(REPO)
    print("\n".join(offenders))
    assert not offenders, f"functions longer than {LIMIT} lines: " + "; ".join(offenders)


def test_the_count_is_asts(tmp_path: Path) -> None:
    """The rule's own count, on a made-up package: 81 lines is one too many, 80 is not, methods count too."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body80 = "\n".join(f"    x{i} = {i}" for i in range(79))
    body81 = "\n".join(f"    x{i} = {i}" for i in range(80))
    method = "\n".join(f"        y{i} = {i}" for i in range(81))
    text = f"def ok():\n{body80}\n\n\ndef long():\n{body81}\n\n\nclass C:\n    def meth(self):\n{method}\n"
    (pkg / "m.py").write_text(text)
    assert long_functions(tmp_path, ("pkg",)) == [
        "pkg/m.py:83 long (81 lines)",
        "pkg/m.py:167 meth (82 lines)",
    ]
