"""Size limits that keep each module one concept and each function readable in one screen.

Issue 17 set them: no module in ``fvdesk/`` above ~600 lines, no function above ~80. A table
(a literal that is data, not logic) may be longer; such exceptions are listed here by name with
the reason, so a new long function fails the test instead of growing silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fvdesk"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# "module.path:qualified.name" -> why it may be longer.
LONG_FUNCTIONS: dict[str, str] = {}
# "fvdesk/relative/path.py" -> why it may be longer.
LONG_MODULES: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, line count) of every function, methods and nested functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                found.append((name, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def _module_key(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _function_key(path: Path, name: str) -> str:
    dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return f"{dotted}:{name}"


def test_no_module_above_the_limit() -> None:
    too_long = {
        _module_key(p): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
        and _module_key(p) not in LONG_MODULES
    }
    assert not too_long, f"modules above {MAX_MODULE_LINES} lines (split them): {too_long}"


def test_no_function_above_the_limit() -> None:
    too_long = {
        key: n
        for p in _modules()
        for name, n in _functions(p)
        if n > MAX_FUNCTION_LINES and (key := _function_key(p, name)) not in LONG_FUNCTIONS
    }
    assert not too_long, f"functions above {MAX_FUNCTION_LINES} lines (split them): {too_long}"


def test_exceptions_are_still_needed() -> None:
    """An exception left behind after a split would let the next long function in unnoticed."""
    lengths = {_function_key(p, name): n for p in _modules() for name, n in _functions(p)}
    stale = [k for k in LONG_FUNCTIONS if lengths.get(k, 0) <= MAX_FUNCTION_LINES]
    modules = {_module_key(p): len(p.read_text().splitlines()) for p in _modules()}
    stale += [k for k in LONG_MODULES if modules.get(k, 0) <= MAX_MODULE_LINES]
    assert not stale, f"listed as long but no longer are: {stale}"


def test_the_checker_sees_long_functions(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 5))
    src = tmp_path / "m.py"
    src.write_text(f"class C:\n  def f(self):\n{body}\n  def g(self):\n    pass\n")
    lengths = dict(_functions(src))
    assert lengths["C.f"] > MAX_FUNCTION_LINES
    assert lengths["C.g"] == 2
