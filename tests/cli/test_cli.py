"""The ``fvdesk`` command line: parsing, layers/info output, render galleries, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from fvdesk.cli import UnitSpec, main
from fvdesk.core.output.gallery import CONTACT_SHEET, INDEX, MANIFEST, read_gallery

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--no-parity", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def demo(demo_model_path):
    from fvdesk.core.model.loader import load_model

    return load_model(demo_model_path, check_parity=False)


@pytest.fixture(scope="module")
def relu(demo):
    """A ReLU feature map of the demo model with >= 8 channels (looked up, not hard-coded)."""
    return next(x for x in demo.graph if x.kind == "feature" and x.op == "Relu" and x.channels >= 8)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- argument helpers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "count", "units"),
    [
        ("all", 4, [0, 1, 2, 3]),
        ("ALL", 2, [0, 1]),
        ("3", 8, [3]),
        ("0-3", 8, [0, 1, 2, 3]),
        ("3,7,9", 10, [3, 7, 9]),
        ("0-2, 5 ,1-3", 8, [0, 1, 2, 5, 3]),
        ("7-7", 8, [7]),
    ],
)
def test_unit_spec(spec: str, count: int, units: list[int]) -> None:
    assert UnitSpec(spec).resolve(count) == units


@pytest.mark.parametrize("spec", ["", "x", "1-", "-3", "3-1", "1,,2", "1.5", "0-63-64", "1 2"])
def test_unit_spec_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        UnitSpec(spec)


def test_unit_spec_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range.*0-7"):
        UnitSpec("0-8").resolve(8)


@pytest.mark.parametrize("command", ["layers", "info", "render", "atlas"])
def test_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "usage: fvdesk " + command in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and command in out


def test_gui_is_started_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("fvdesk.gui.app")
    fake.run_app = lambda path, device=None: calls.append((path, device)) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fvdesk.gui.app", fake)
    assert main([]) == 7
    assert main(["some/model.onnx"]) == 7
    assert calls == [(None, None), ("some/model.onnx", None)]


def test_a_model_with_app_options_starts_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fvdesk MODEL.onnx --device cpu`` is the app with a device, not a headless command."""
    calls = []
    fake = types.ModuleType("fvdesk.gui.app")
    fake.run_app = lambda path, device=None: calls.append((path, device)) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fvdesk.gui.app", fake)
    assert main(["m.onnx", "--device", "cpu"]) == 7
    assert main(["--device", "cuda:1"]) == 7
    assert calls == [("m.onnx", "cpu"), (None, "cuda:1")]


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rendr", "--layer", "x")
    assert code == 2 and "invalid choice" in err


# -- layers / info ---------------------------------------------------------------------------
def test_layers_demo(capsys: pytest.CaptureFixture[str], demo, relu) -> None:
    code, out, _ = run(capsys, "layers", *FAST)
    assert code == 0
    assert relu.name in out and "Relu" in out and "(logits)" in out
    code, out, _ = run(capsys, "layers", "--json", *FAST)
    layers = json.loads(out)
    assert code == 0 and isinstance(layers, list)
    by_name = {d["name"]: d for d in layers}
    assert {"name", "op", "shape", "channels"} <= set(layers[0])
    got = by_name[relu.name]
    assert got["op"] == "Relu" and got["channels"] == relu.channels
    assert got["shape"] == [None if d is None else int(d) for d in relu.shape]
    assert len(got["shape"]) == 4 and got["shape"][1] == relu.channels
    assert [d["name"] for d in layers] == [x.name for x in demo.graph]
    assert by_name[demo.graph.logits_name]["channels"] == len(demo.labels) == 8
    code, out, _ = run(capsys, "layers", "--json", "--filter", "relu", *FAST)
    names = [d["name"] for d in json.loads(out)]
    assert names and all("relu" in n.lower() for n in names)


def test_info_demo(capsys: pytest.CaptureFixture[str], demo_model_path: Path, demo) -> None:
    code, out, _ = run(capsys, "info", demo_model_path, "--device", "cpu", "--quiet")
    assert code == 0
    for word in ("input:", "preprocessing:", "labels:", "parity:", "device:", "cpu"):
        assert word in out
    assert "ok" in out  # the parity verdict
    code, out, _ = run(capsys, "info", "--json", *FAST)
    info = json.loads(out)
    assert info["input"]["channels"] == 3 and info["labels"]["count"] == 8
    assert {"preprocessing", "parity", "device", "model"} <= set(info)


@pytest.mark.slow
def test_layers_and_info_torchvision(capsys: pytest.CaptureFixture[str], torchvision_onnx) -> None:
    path = torchvision_onnx("resnet18", size=224)
    code, out, _ = run(capsys, "layers", path, "--json", *FAST)
    assert code == 0
    layers = {d["name"]: d for d in json.loads(out)}
    convs = [d for d in layers.values() if d["op"] == "Conv"]
    assert len(convs) == 20  # resnet18: stem + 16 block convs + 3 downsample
    first = convs[0]
    assert first["shape"][1:] == [64, 112, 112] and first["channels"] == 64
    assert any(d["op"] == "Gemm" and d["channels"] == 1000 for d in layers.values())
    code, out, _ = run(capsys, "info", path, "--json", "--device", "cpu", "--quiet")
    info = json.loads(out)
    assert code == 0 and info["parity"]["ok"] and info["input"]["height"] == 224


# -- errors ----------------------------------------------------------------------------------
def test_model_that_fails_to_load(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    code, out, err = run(capsys, "info", bad, "--quiet")
    assert code == 1
    assert "broken.onnx" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "layers", tmp_path / "missing.onnx", "--quiet")
    assert code == 1 and "missing.onnx" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, relu) -> None:
    out_dir = tmp_path / "g"
    code, _, err = run(
        capsys, "render", "--layer", "/features/block2/relu/Rel", "--out", out_dir, *FAST
    )
    assert code == 2 and "did you mean" in err and relu.name in err
    code, _, err = run(
        capsys,
        "render",
        "--layer",
        relu.name,
        "--units",
        f"0-{relu.channels}",
        "--out",
        out_dir,
        *FAST,
    )
    assert code == 2 and "out of range" in err and f"0-{relu.channels - 1}" in err
    code, _, err = run(capsys, "render", "--layer", relu.name, "--units", "3-1", "--out", out_dir)
    assert code == 2 and "backwards" in err
    code, _, err = run(capsys, "render", "--layer", relu.name)
    assert code == 2 and "--out" in err
    code, _, err = run(capsys, "render", "--layer", relu.name, "--steps", "0", "--out", out_dir)
    assert code == 2 and "at least 1" in err
    code, _, err = run(
        capsys, "render", "--layer", relu.name, "--objective", "logit", "--out", out_dir, *FAST
    )
    assert code == 2 and "vector layer" in err
    code, _, err = run(
        capsys, "render", "--layer", relu.name, "--preprocess", "nope", "--out", out_dir
    )
    assert code == 2 and "imagenet" in err
    assert not out_dir.exists()


# -- render ----------------------------------------------------------------------------------
def test_render_writes_a_gallery(capsys: pytest.CaptureFixture[str], tmp_path: Path, relu) -> None:
    out_dir = tmp_path / "gallery"
    args = ["render", "--layer", relu.name, "--units", "0-2,5", "--steps", "8", "--size", "32"]
    args += ["--seed", "3", "--batch", "2", "--out", out_dir, *FAST]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    for name in (MANIFEST, CONTACT_SHEET, INDEX):
        assert (out_dir / name).is_file()
    manifest, pairs = read_gallery(out_dir)
    assert manifest["model"]["file"] == "demo.onnx"
    assert sorted(it.unit for it, _ in pairs) == [0, 1, 2, 5]
    for it, img in pairs:
        assert it.layer == relu.name and it.objective == "channel" and not it.negative
        assert it.steps == 8 and it.settings["steps"] == 8 and it.settings["size"] == 32
        assert it.settings["seed"] == 3 and "preprocessing" in it.provenance
        assert img.shape[:2] == (32, 32)
        assert float(np.asarray(img, dtype=np.float32).std()) > 2.0, f"{it.file} is blank"
    page = (out_dir / INDEX).read_text()
    assert "demo.onnx" in page and all(it.file in page for it, _ in pairs)


def test_render_logit_and_baseline_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo
) -> None:
    out_dir = tmp_path / "logits"
    args = [
        "render",
        "--objective",
        "logit",
        "--units",
        "1",
        "--steps",
        "4",
        "--size",
        "32",
        "--negative",
    ]
    args += ["--param", "pixel", "--no-decorrelate", "--no-transforms", "--out", out_dir, *FAST]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    _, pairs = read_gallery(out_dir)
    ((it, _),) = pairs
    assert it.objective == "logit" and it.negative and it.label == demo.labels[1]
    assert it.settings["param"] == "pixel"


def test_headless_commands_never_import_qt(tmp_path: Path, relu) -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from fvdesk.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['layers', '--no-parity']),\n"
        f"             main(['render', '--layer', {relu.name!r}, '--units', '0', '--steps', '2', '--size', '16',\n"
        f"                   '--out', {str(tmp_path / 'g')!r}, '--no-parity', '--quiet']),\n"
        "             main(['render', '--layer', 'nope', '--out', 'x', '--no-parity', '--quiet'])]\n"
        "qt = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6')]\n"
        "print(codes, qt)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 2] []", out.stdout + out.stderr


def test_interrupt_exits_130_and_keeps_the_gallery(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relu
) -> None:
    from fvdesk.core.jobs import run as runner
    from fvdesk.core.optim.events import UnitDoneEvent

    real = runner.run_job

    def interrupted(model, job, cancel=None, **kw):
        gen = real(model, job, cancel, **kw)
        n = 0
        for ev in gen:
            yield ev
            if isinstance(ev, UnitDoneEvent):
                n += 1
                if n == 2:
                    raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_job", interrupted)
    out_dir = tmp_path / "g"
    args = ["render", "--layer", relu.name, "--units", "0-5", "--steps", "2", "--size", "16"]
    args += ["--batch", "1", "--out", out_dir, *FAST]
    code, _, err = run(capsys, *args)
    assert code == 130 and "interrupted" in err
    _, pairs = read_gallery(out_dir)
    assert sorted(it.unit for it, _ in pairs) == [0, 1]


# -- the job model from the command line ------------------------------------------------------
def test_render_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from fvdesk.core.optim.options import OPTIONS

    code, out, _ = run(capsys, "render", "--help")
    assert code == 0
    for o in OPTIONS:
        assert o.flag in out, o.flag
    for flag in ("--no-transforms", "--color-from", "--objective", "--from", "--item", "--labels"):
        assert flag in out


def test_render_a_combination(capsys: pytest.CaptureFixture[str], tmp_path: Path, relu) -> None:
    out_dir = tmp_path / "combo"
    expr = f"{relu.name}:1 + 0.5*{relu.name}:4 - {relu.name}:7"
    args = ["render", "--objective", expr, "--steps", "4", "--size", "24", "--diversity", "2"]
    code, _, err = run(capsys, *args, "--tv", "0.1", "--jitter", "4", "--out", out_dir, *FAST)
    assert code == 0, err
    _, pairs = read_gallery(out_dir)
    assert len(pairs) == 2 and {it.facet for it, _ in pairs} == {0, 1}
    it = pairs[0][0]
    assert it.objective == "combination" and it.caption.startswith(f"{relu.name}:1 + 0.5·")
    terms = it.provenance["job"]["terms"]
    assert [(t["unit"], t["weight"]) for t in terms] == [(1, 1.0), (4, 0.5), (7, -1.0)]
    assert it.settings["tv"] == 0.1 and it.settings["transforms"]["jitter"] == 4
    code, _, err = run(capsys, "render", "--objective", f"{relu.name}x:1 + {relu.name}:2",
                       "--out", out_dir, *FAST)  # fmt: skip
    assert code == 2 and "did you mean" in err
    code, _, err = run(capsys, "render", "--objective", "sparkle", "--out", out_dir, *FAST)
    assert code == 2 and "combination" in err


def test_from_reproduces_saved_items_bit_exactly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, relu
) -> None:
    src = tmp_path / "src"
    args = ["render", "--layer", relu.name, "--units", "2,5,6", "--steps", "4", "--size", "24"]
    code, _, err = run(capsys, *args, "--batch", "2", "--seed", "4", "--out", src, *FAST)
    assert code == 0, err
    _, pairs = read_gallery(src)
    assert [it.provenance["batch"] for it, _ in pairs] == [[0, 1], [0, 1], [2]]
    again = tmp_path / "again"
    code, out, err = run(capsys, "render", "--from", src / MANIFEST, "--item", "1", "--item", "2",
                         "--out", again, "--no-parity", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert out.count("identical to the saved image") == 2 and "2 identical" in out
    _, new = read_gallery(again)
    saved = {it.unit: img for it, img in pairs}
    assert {it.unit for it, _ in new} >= {5, 6}
    for it, img in new:
        assert np.array_equal(img, saved[it.unit])
    code, _, err = run(capsys, "render", "--from", src, "--item", "9", *FAST)
    assert code == 2 and "no item 9" in err


def test_from_refuses_another_model_and_records_without_provenance(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, relu, model_cache: Path
) -> None:
    from tests.models import small_onnx

    src = tmp_path / "src"
    code, _, _ = run(capsys, "render", "--layer", relu.name, "--units", "1", "--steps", "2",
                     "--size", "16", "--out", src, *FAST)  # fmt: skip
    assert code == 0
    code, _, err = run(capsys, "render", small_onnx(model_cache), "--from", src, *FAST)
    assert code == 2 and "was rendered from demo.onnx" in err
    data = json.loads((src / MANIFEST).read_text())
    data["items"][0]["provenance"] = {}
    (src / MANIFEST).write_text(json.dumps(data))
    code, _, err = run(capsys, "render", "--from", src, *FAST)
    assert code == 2 and "no provenance record" in err


def test_preprocess_json_labels_and_remember(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_model_path: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(demo_model_path.read_bytes())
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(8)) + "\n")
    caffe = '{"range": [0, 255], "mean": [103.939, 116.779, 123.68], "bgr": true}'
    code, out, err = run(capsys, "info", model, "--preprocess", caffe, "--labels", labels,
                         "--json", "--no-parity", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    info = json.loads(out)
    assert info["preprocessing"]["bgr"] is True and info["preprocessing"]["range"] == [0, 255]
    assert info["labels"]["source"] == "user"
    assert not (tmp_path / "m.fvdesk.json").exists()  # nothing written unless asked
    code, _, err = run(capsys, "info", model, "--preprocess", caffe, "--remember", *FAST)
    assert code == 0, err
    saved = json.loads((tmp_path / "m.fvdesk.json").read_text())
    assert saved["preprocessing"]["bgr"] is True
    code, _, err = run(capsys, "info", model, "--preprocess", '{"range": [1, 1]}', *FAST)
    assert code == 2 and "degenerate" in err
    code, _, err = run(capsys, "info", model, "--remember", *FAST)
    assert code == 2 and "--remember" in err
    out_dir = tmp_path / "g"
    code, _, err = run(capsys, "render", model, "--objective", "logit", "--units", "3",
                       "--labels", labels, "--steps", "2", "--size", "16", "--out", out_dir, *FAST)  # fmt: skip
    assert code == 0, err
    ((it, _),) = read_gallery(out_dir)[1]
    assert it.label == "thing 3"


def test_a_neuron_position_off_a_small_canvas_grid_is_one_sentence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A position picked at the model's size (7,7 of the 8x8 grid at 64 px) does not exist when
    the canvas is 32 px (a 2x2 grid): a sentence naming the grid, not an internal IndexError."""
    rc = main(["render", "--layer", "/features/block4/relu/Relu", "--units", "0",
               "--objective", "neuron", "--position", "7,7", "--size", "32", "--steps", "2",
               "--out", str(tmp_path / "g"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1
    assert "The neuron position (7, 7) is outside /features/block4/relu/Relu's" in err
    assert "grid at this canvas size" in err
