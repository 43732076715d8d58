"""A seeded sample of the hostile-file campaign (tools/hostile_files.py; the README quotes the
10,000-file run): no crash, no raw traceback, no hang, every refusal one sentence naming the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tools import hostile_files as hf  # noqa: E402


def _run(args: list[str], out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "hostile_files.py"), *args, "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert out.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_seeded_sample_of_300_files(tmp_path: Path) -> None:
    args = [
        "--count",
        "300",
        "--seed",
        "11",
        "--timeout",
        "60",
        "--canaries",
        "--bases",
        "tiny,new_ops",
    ]
    report = _run(args, tmp_path / "r.json")
    # The harness itself can fail: children that crash, hang, raise or answer unclearly on
    # purpose are seen as exactly that.
    assert report["canaries_seen_as"] == {
        "crash": "crash", "hang": "hang", "traceback": "traceback", "unclear": "unclear",
    }  # fmt: skip
    counts = report["counts"]
    assert report["files"] == 300
    bad = {k: counts[k] for k in ("unclear", "wrapped", "traceback", "crash", "hang", "memory")}
    assert bad == dict.fromkeys(bad, 0), report["findings"][:10]
    assert counts["loaded"] > 30 and counts["refused"] > 150  # the sample reaches deep, and refuses
    assert len(report["kinds"]) >= 15


def test_generation_is_deterministic_and_length_prefixes_parse() -> None:
    bases = hf.base_models()
    a = hf.make_case(3, 42, bases)
    b = hf.make_case(3, 42, bases)
    assert a.data == b.data and a.kind == b.kind
    spots = hf.length_prefixes(bases["tiny"])
    assert len(spots) > 10  # graph, nodes, initializers, their names ...
    off, size, n = spots[0]
    value, end = hf._read_varint(bases["tiny"], off)
    assert (value, end - off) == (n, size)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("/x/model.onnx is not a valid ONNX file.", "refused"),
        ("/x/model.onnx could not be loaded while converting to torch: IndexError.", "wrapped"),
        ("something failed.", "unclear"),
        ("/x/model.onnx failed\nbadly.", "unclear"),
    ],
)
def test_classification_of_messages(message: str, expected: str) -> None:
    assert hf.classify(message, Path("/x/model.onnx")) == expected
