"""docs/API.md is a test: its Python blocks run in order, in an empty folder, as written."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "API.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line, code)`` of every fenced ```python block."""
    out, start, buf = [], 0, None
    for n, line in enumerate(text.splitlines(), 1):
        if buf is None and line.strip() == "```python":
            start, buf = n + 1, []
        elif buf is not None and line.strip() == "```":
            out.append((start, "\n".join(buf)))
            buf = None
        elif buf is not None:
            buf.append(line)
    return out


def test_the_walk_through_covers_the_api() -> None:
    code = "\n".join(c for _, c in python_blocks(DOC.read_text(encoding="utf-8")))
    for call in ("fvdesk.load_model(", "model.layers", "fvdesk.render_units(", "fvdesk.render(",
                 "fvdesk.unit(", "fvdesk.save_gallery(", "fvdesk.open_gallery(",
                 "fvdesk.examples(", "except fvdesk."):  # fmt: skip
        assert call in code, call
    assert len(python_blocks(DOC.read_text(encoding="utf-8"))) >= 8


def test_the_block_reader_finds_blocks_and_only_python_ones() -> None:
    text = "a\n```python\nx = 1\ny = 2\n```\n```bash\nls\n```\n```python\nz = 3\n```\n"
    assert python_blocks(text) == [(3, "x = 1\ny = 2"), (10, "z = 3")]


def test_the_walk_through_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          examples_cache: Path, capsys) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__api_doc__"}
    for start, code in python_blocks(DOC.read_text(encoding="utf-8")):
        # padded so a traceback names the document's own line
        exec(compile("\n" * (start - 1) + code, str(DOC), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "False" not in out, out  # the walk-through prints its own checks
    assert (tmp_path / "demo-gallery" / "gallery.json").is_file()
    assert (tmp_path / "demo-examples" / "index.html").is_file()
    assert "no layer named '/features/no-such-layer'" in out
    assert any(examples_cache.iterdir()), "the examples pass used the test's cache"


def test_the_readme_links_the_walk_through() -> None:
    assert "docs/API.md" in (ROOT / "README.md").read_text(encoding="utf-8")
