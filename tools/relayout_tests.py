"""Lay tests/ out like the code: ``tests/core/{model,optim,output,dataset,jobs}``, ``tests/cli``,
``tests/api``, ``tests/gui``, ``tests/integration`` (README, self-test, real-world models, the zoo,
the GPU) and ``tests/project`` (checks over the whole repository: lint, types, import rules).

    python tools/relayout_tests.py            # move, then fix imports and paths
    python tools/relayout_tests.py --dry-run  # only print what it would do

Files in the table below go where it says; a test file it does not know goes by its name
(``test_gui*`` -> gui, ``test_cli*`` -> cli, ``test_api*`` -> api, ``test_<core package>*`` ->
core/<package>) or else by the fvdesk package it imports most; one it cannot place stays where it
is (and is listed).  Only files at the top of
tests/ move, so a second run changes nothing.  After moving, every ``tests.<module>`` import,
``tests/<file>`` mention (code, docs, pyproject, CI) and ``Path(__file__)`` relative path in a
moved file is rewritten, and each new folder gets an ``__init__.py``.  Moves use ``git mv`` where
the file is tracked, so history follows.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# stem (a .py at the top of tests/, or a folder) -> its new place, relative to tests/
KNOWN: dict[str, str] = {
    # the public Python API (fvdesk/api)
    "test_api": "api/test_api",
    "test_api_deprecations": "api/test_api_deprecations",
    "test_api_names": "api/test_api_names",
    # the command line (fvdesk/cli)
    "test_cli": "cli/test_cli",
    "test_cli_article": "cli/test_cli_article",
    "test_progress": "cli/test_progress",
    "test_examples_output": "cli/test_examples_output",
    # fvdesk/core outside its packages
    "test_fileio": "core/test_fileio",
    "test_display_check": "core/test_display_check",
    "test_demo_model": "core/test_demo_model",
    # fvdesk/core/model
    "test_canonicalize": "core/model/test_canonicalize",
    "test_choices": "core/model/test_choices",
    "test_graph": "core/model/test_graph",
    "test_hostile_files": "core/model/test_hostile_files",
    "test_load_errors": "core/model/test_load_errors",
    "test_load_sidecar_labels": "core/model/test_load_sidecar_labels",
    "test_loader": "core/model/test_loader",
    "test_opset18": "core/model/test_opset18",
    "test_size_multiple": "core/model/test_size_multiple",
    # fvdesk/core/optim
    "test_article_engine": "core/optim/test_article_engine",
    "test_engine_demo": "core/optim/test_engine_demo",
    "test_objectives": "core/optim/test_objectives",
    "test_param": "core/optim/test_param",
    "test_presentation": "core/optim/test_presentation",
    "test_provenance": "core/optim/test_provenance",
    "test_quality": "core/optim/test_quality",
    "test_recipes": "core/optim/test_recipes",
    "test_render": "core/optim/test_render",
    "test_schedule": "core/optim/test_schedule",
    "test_transforms": "core/optim/test_transforms",
    # fvdesk/core/output
    "test_atlas": "core/output/test_atlas",
    "test_gallery": "core/output/test_gallery",
    # fvdesk/core/dataset
    "test_dataset": "core/dataset/test_dataset",
    "test_dataset_exports": "core/dataset/test_dataset_exports",
    # fvdesk/core/jobs
    "test_jobs": "core/jobs/test_jobs",
    # the app (fvdesk/gui); test_gui* and test_settings_* go here by the name rules too
    "gui_support": "gui/support",
    # the whole product
    "test_readme": "integration/test_readme",
    "readme_support": "integration/readme_support",
    "test_selftest": "integration/test_selftest",
    "test_real_world": "integration/test_real_world",
    "test_zoo_matrix": "integration/test_zoo_matrix",
    "zoo": "integration/zoo",
    "test_api_docs": "integration/test_api_docs",
    "test_gpu": "integration/test_gpu",
    # the repository's own rules
    "test_boundary": "project/test_boundary",
    "test_import_cycles": "project/test_import_cycles",
    "import_graph": "project/import_graph",
    "test_lint": "project/test_lint",
    "test_typecheck": "project/test_typecheck",
    "test_markers": "project/test_markers",
    "test_relayout": "project/test_relayout",
    "test_limits": "project/test_limits",
}
# shared by tests everywhere: they stay at the top (as conftest.py and __init__.py do)
STAY = {"__init__", "conftest", "models", "images", "builders"}
# name rules for files the table does not know: (prefix, folder)
BY_NAME = [
    ("test_gui", "gui"),
    ("test_settings_dock", "gui"),
    ("test_cli", "cli"),
    ("test_api", "api"),
    ("test_readme", "integration"),
    ("test_zoo", "integration"),
    ("test_real_world", "integration"),
    ("test_selftest", "integration"),
]
# else by the package imported most: fvdesk.core.<package> -> core/<package> (whatever packages
# fvdesk/core has then), other fvdesk.core modules -> core, and these
BY_IMPORT = [
    ("fvdesk.gui", "gui"),
    ("fvdesk.cli", "cli"),
    ("fvdesk.api", "api"),
    ("fvdesk.selftest", "integration"),
]
# a file that says this is never rewritten (it names old places on purpose)
LEAVE = "relayout: leave this file"
# where mentions of old paths are rewritten (besides tests/ itself)
TEXT_PLACES = ["fvdesk", "tools", "benchmarks", "docs", "README.md", "pyproject.toml", ".ci"]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".sh", ".cfg", ".ini", ".yml", ".yaml", ""}
IMPORT_RE = re.compile(r"^\s*(?:from|import)\s+(fvdesk(?:\.\w+)*)", re.M)


def core_packages() -> list[str]:
    """fvdesk/core's sub-packages, as they are now (a split adds folders to the layout)."""
    core = ROOT / "fvdesk" / "core"
    if not core.is_dir():
        return []
    return sorted(d.name for d in core.iterdir() if (d / "__init__.py").is_file())


def folder_of(module: str) -> str | None:
    """The tests folder of an imported ``fvdesk`` module (None: not fvdesk's)."""
    parts = module.split(".")
    if parts[0] != "fvdesk" or len(parts) < 2:
        return "api" if parts == ["fvdesk"] else None
    if parts[1] == "core":
        return f"core/{parts[2]}" if len(parts) > 2 and parts[2] in core_packages() else "core"
    for prefix, folder in BY_IMPORT:
        if module == prefix or module.startswith(prefix + "."):
            return folder
    return None


def by_imports(path: Path) -> str | None:
    """The folder of the fvdesk package ``path`` imports most (ties: the more specific)."""
    counts: collections.Counter[str] = collections.Counter()
    for mod in IMPORT_RE.findall(path.read_text(encoding="utf-8")):
        folder = folder_of(mod)
        if folder:
            counts[folder] += 1
    if not counts:
        return None
    return max(counts, key=lambda f: (counts[f], f.count("/")))


def destination(path: Path) -> str | None:
    """``path``'s new place relative to tests/ (without .py), or None: it stays."""
    stem = path.stem if path.is_file() else path.name
    if stem in STAY:
        return None
    if stem in KNOWN:
        return KNOWN[stem]
    if path.is_dir() or not stem.startswith("test_"):
        return None  # an unknown support module: it stays where its users import it from
    for prefix, folder in BY_NAME:
        if stem.startswith(prefix):
            return f"{folder}/{stem}"
    for package in core_packages():  # test_dataset_scale -> core/dataset
        if stem == f"test_{package}" or stem.startswith(f"test_{package}_"):
            return f"core/{package}/{stem}"
    folder = by_imports(path)
    return f"{folder}/{stem}" if folder else None


def plan() -> tuple[dict[str, str], list[str]]:
    """``{old: new}`` (paths relative to tests/, without .py) for what is at the top now, and
    the test files that stay there for want of a rule."""
    moves, unplaced = {}, []
    for p in sorted(TESTS.iterdir()):
        if p.name.startswith((".", "__pycache__")) or (p.is_file() and p.suffix != ".py"):
            continue
        if p.is_dir() and p.name not in KNOWN:
            continue  # a folder of the layout (or one somebody else made)
        dest = destination(p)
        if dest is None:
            if p.is_file() and p.stem.startswith("test_"):
                unplaced.append(p.name)
            continue
        moves[p.stem if p.is_file() else p.name] = dest
    return moves, unplaced


def renames() -> dict[str, str]:
    """Every known old place whose new one exists now: what mentions get rewritten to (so a
    branch merged after the move, still naming an old place, is fixed by a rerun)."""
    out = {}
    for old, new in KNOWN.items():
        gone = not (TESTS / f"{old}.py").exists() and not (TESTS / old).is_dir()
        if gone and ((TESTS / f"{new}.py").exists() or (TESTS / new).is_dir()):
            out[old] = new
    return out


def git_mv(src: Path, dst: Path, dry: bool) -> None:
    print(f"move {src.relative_to(ROOT)} -> {dst.relative_to(ROOT)}")
    if dry:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(src)], cwd=ROOT, capture_output=True
    ).returncode == 0  # fmt: skip
    if tracked:
        subprocess.run(["git", "mv", str(src), str(dst)], cwd=ROOT, check=True)
    else:
        shutil.move(str(src), str(dst))


def add_inits(dry: bool) -> None:
    """An ``__init__.py`` in every folder of tests/ that holds Python (module names then
    follow the folders, so two files may share a name)."""
    for d in sorted({p.parent for p in TESTS.rglob("*.py")}):
        if "readme_support" in d.parts or "__pycache__" in d.parts:
            continue  # put on PYTHONPATH for a subprocess, not a package
        for folder in [d, *d.parents]:
            if folder == TESTS.parent:
                break
            init = folder / "__init__.py"
            if not init.exists():
                print(f"add {init.relative_to(ROOT)}")
                if not dry:
                    init.write_text("")


def rewrite_mentions(text: str, table: dict[str, str]) -> str:
    """Imports (``tests.old``, ``from tests import old``) and paths (``tests/old.py``,
    ``tests/old/``) of moved modules, in code, docs and config alike."""
    for old, new in table.items():
        new_dotted = "tests." + new.replace("/", ".")
        pkg, _, leaf = new_dotted.rpartition(".")
        # from tests import old [as alias]  ->  from tests.pkg import leaf as old
        text = re.sub(
            rf"^(\s*)from tests import {old}\b(\s+as\s+\w+)?",
            lambda m, pkg=pkg, leaf=leaf, old=old: (
                f"{m.group(1)}from {pkg} import {leaf}"
                + (m.group(2) or (f" as {old}" if leaf != old else ""))
            ),
            text,
            flags=re.M,
        )
        text = re.sub(rf"(?<![\w.]){re.escape('tests.' + old)}\b", new_dotted, text)
        text = re.sub(rf"(?<![\w./]){re.escape('tests/' + old)}\b", f"tests/{new}", text)
    return text


PARENTS_RE = re.compile(r"Path\(__file__\)(\.resolve\(\))?\.parents\[(\d+)\]")
PARENT_RE = re.compile(r"Path\(__file__\)(\.resolve\(\))?\.parent(\s*/\s*)([\"'])([^\"']+)\3")


def fix_relative_paths(text: str, old_rel: str, new_rel: str, table: dict[str, str]) -> str:
    """``Path(__file__)`` expressions in a file moved from tests/old_rel to tests/new_rel: the
    repository root gets as many more ``parents`` as the file went deeper, and a sibling named by
    ``.parent / "name"`` is followed to wherever it went."""
    delta = new_rel.count("/") - old_rel.count("/")
    text = PARENTS_RE.sub(
        lambda m: f"Path(__file__){m.group(1) or ''}.parents[{int(m.group(2)) + delta}]", text
    )

    def sibling(m: re.Match[str]) -> str:
        name = m.group(4)
        first, _, rest = name.partition("/")
        old_target = first.removesuffix(".py")
        target = table.get(old_target, old_target) + (".py" if first.endswith(".py") else "")
        target = target + ("/" + rest if rest else "")
        here = Path(new_rel).parent
        if Path(target).parent == here:
            return f"Path(__file__){m.group(1) or ''}.parent{m.group(2)}{m.group(3)}{Path(target).name}{m.group(3)}"
        up = len(here.parts)
        return f"Path(__file__){m.group(1) or ''}.parents[{up}]{m.group(2)}{m.group(3)}{target}{m.group(3)}"

    return PARENT_RE.sub(sibling, text)


def text_files() -> list[Path]:
    files = [p for p in TESTS.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES - {""}]
    for place in TEXT_PLACES:
        p = ROOT / place
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [q for q in p.rglob("*") if q.is_file() and q.suffix in TEXT_SUFFIXES]
    me = Path(__file__).resolve()
    return sorted(f for f in set(files) if f.resolve() != me and "__pycache__" not in f.parts)


def tidy(files: list[Path]) -> None:
    """Re-sort the rewritten imports and re-format (ruff, where installed)."""
    py = [str(f) for f in files if f.suffix == ".py"]
    if not py:
        return
    for cmd in (["check", "--fix", "--select", "I", "--quiet"], ["format", "--quiet"]):
        try:
            subprocess.run([sys.executable, "-m", "ruff", *cmd, *py], cwd=ROOT, check=False)
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    args = ap.parse_args(argv)
    dry = args.dry_run

    moves, unplaced = plan()
    for old, new in moves.items():
        src = TESTS / old if (TESTS / old).is_dir() else TESTS / f"{old}.py"
        dst = TESTS / new if src.is_dir() else TESTS / f"{new}.py"
        if dst.exists():
            print(
                f"error: {dst.relative_to(ROOT)} exists already; {src.name} left", file=sys.stderr
            )
            return 1
        git_mv(src, dst, dry)
    add_inits(dry)
    if dry:
        table = {**renames(), **moves}
    else:
        table = {**renames(), **{k: v for k, v in moves.items() if k not in KNOWN}}
    touched: list[Path] = []
    for f in text_files():
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if LEAVE in text:
            continue
        new_text = rewrite_mentions(text, table)
        rel = f.relative_to(TESTS).with_suffix("").as_posix() if TESTS in f.parents else None
        origin = next((o for o, n in moves.items() if n == rel), None)
        if origin is not None and f.suffix == ".py":
            new_text = fix_relative_paths(new_text, origin, rel, table)
        if new_text != text:
            touched.append(f)
            print(f"rewrite {f.relative_to(ROOT)}")
            if not dry:
                f.write_text(new_text, encoding="utf-8")
    if touched and not dry:
        tidy(touched)
    print(f"{len(moves)} moved, {len(touched)} files rewritten.")
    if unplaced:
        print("left at the top of tests/ (no rule places them): " + ", ".join(unplaced))
    return 0


if __name__ == "__main__":
    sys.exit(main())
