"""tools/relayout_tests.py on a made-up tests/ folder: known files go where the table says, new
ones by their name or imports, imports and paths follow, and a second run changes nothing.
(It names the old places on purpose: relayout: leave this file.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent
while not (TOOL / "tools").is_dir():
    TOOL = TOOL.parent
TOOL = TOOL / "tools" / "relayout_tests.py"

FILES = {
    "tests/__init__.py": "",
    "tests/conftest.py": "from tests.gui_support import helper\n",
    "tests/models.py": "",
    "tests/gui_support.py": "def helper():\n    pass\n",
    "tests/test_cli.py": "from fvdesk.cli import main\n\nFAST = 1\n",
    "tests/test_gui_brand_new.py": "from tests import gui_support\n",
    "tests/test_new_render_thing.py": (
        "from pathlib import Path\n\nfrom fvdesk.core.optim.render import render\n"
        "from fvdesk.core.optim import settings\nfrom fvdesk.cli import main\n"
        "from tests.test_cli import FAST\n\n"
        'ROOT = Path(__file__).resolve().parents[1]\nDATA = Path(__file__).parent / "models.py"\n'
    ),
    "tests/test_mystery.py": "import os\n",
    "tests/test_model_odd_files.py": "import os\n",
    "fvdesk/core/__init__.py": "",
    "fvdesk/core/model/__init__.py": "",
    "fvdesk/core/optim/__init__.py": "",
    "docs/NOTES.md": "See tests/test_cli.py and tests/gui_support.helper.\n",
}


@pytest.fixture
def relayout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("relayout_tests", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "TESTS", tmp_path / "tests")
    monkeypatch.setattr(mod, "tidy", lambda files: None)  # no ruff on a made-up tree
    return mod, tmp_path


def test_moves_rewrites_and_is_idempotent(relayout, capsys) -> None:
    mod, root = relayout
    assert mod.main([]) == 0
    t = root / "tests"
    assert (t / "cli" / "test_cli.py").is_file() and (t / "gui" / "support.py").is_file()
    assert (t / "gui" / "test_gui_brand_new.py").is_file()  # by its name
    moved = t / "core" / "optim" / "test_new_render_thing.py"  # by what it imports most
    assert moved.is_file() and (t / "test_mystery.py").is_file()  # no rule: stays, listed
    assert (t / "core" / "model" / "test_model_odd_files.py").is_file()  # a core package's name
    assert (t / "models.py").is_file() and (t / "conftest.py").is_file()
    assert all((t / d / "__init__.py").is_file() for d in ("cli", "gui", "core", "core/optim"))
    text = moved.read_text()
    assert "from tests.cli.test_cli import FAST" in text
    assert "Path(__file__).resolve().parents[3]" in text
    assert 'Path(__file__).parents[2] / "models.py"' in text
    assert (t / "conftest.py").read_text() == "from tests.gui.support import helper\n"
    assert (
        "from tests.gui import support as gui_support"
        in (t / "gui" / "test_gui_brand_new.py").read_text()
    )
    assert (root / "docs" / "NOTES.md").read_text() == (
        "See tests/cli/test_cli.py and tests/gui/support.helper.\n"
    )
    assert "test_mystery.py" in capsys.readouterr().out
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    assert mod.main([]) == 0
    assert {p: p.read_text() for p in root.rglob("*") if p.is_file()} == before


def test_a_branch_naming_old_places_is_fixed_by_a_rerun(relayout) -> None:
    mod, root = relayout
    mod.main([])
    late = root / "tests" / "gui" / "test_gui_late.py"
    late.write_text("from tests.gui_support import helper\nfrom tests.test_cli import FAST\n")
    mod.main([])
    assert late.read_text() == (
        "from tests.gui.support import helper\nfrom tests.cli.test_cli import FAST\n"
    )


def test_a_file_that_asks_is_left_alone(relayout) -> None:
    mod, root = relayout
    keep = root / "docs" / "HISTORY.md"
    keep.write_text("tests/test_cli.py was here (relayout: leave this file)\n")
    mod.main([])
    assert keep.read_text() == "tests/test_cli.py was here (relayout: leave this file)\n"
