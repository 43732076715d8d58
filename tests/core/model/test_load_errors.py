"""Bad input: every failure is one ``FvdeskError`` whose message is one sentence naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fvdesk.core.errors import (
    AmbiguousInputError,
    ConfigError,
    FvdeskError,
    ModelLoadError,
    UnsupportedModelError,
)
from fvdesk.core.model.loader import load_model
from tests import builders as B
from tests import models as test_models


def _one_sentence(err: FvdeskError, path: Path) -> str:
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.endswith("."), msg
    assert str(path) in msg or path.name in msg, msg
    return msg


def _fails(path: Path, kind: type[FvdeskError] = ModelLoadError, **kwargs) -> str:
    with pytest.raises(kind) as info:
        load_model(path, **kwargs)
    return _one_sentence(info.value, path)


def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()) -> onnx.ModelProto:
    return B.onnx_model(nodes, inputs, outputs, inits, opset=opset, domains=domains)


def _image(name: str = "x", shape=(1, 3, 8, 8)) -> onnx.ValueInfoProto:
    return B.tensor(name, shape)


def _conv_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    return _model(nodes, [_image()], [_image("y", (1, 4, 6, 6))], [w])


# -- the file itself -----------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _fails(tmp_path / "nope.onnx")


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "model.onnx"
    d.mkdir()
    assert "is a folder" in _fails(d)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    assert "is empty" in _fails(p)


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, model_cache: Path, fraction: float) -> None:
    data = test_models.small_onnx(model_cache, "rgb").read_bytes()
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    msg = _fails(p)
    assert any(w in msg for w in ("truncated", "corrupt", "not a valid ONNX", "not an ONNX")), msg


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        b"hello, this is a text file and not a model\n" * 20,
        b'{"model": "not onnx"}',
        np.random.default_rng(0).bytes(5000),
        b"\x00" * 1000,
    ],
    ids=["png", "text", "json", "random", "zeros"],
)
def test_bytes_that_are_not_onnx(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fake.onnx"
    p.write_bytes(data)
    msg = _fails(p)
    assert any(w in msg for w in ("not a valid ONNX", "not an ONNX", "corrupt", "empty graph")), msg


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "locked.onnx"
    onnx.save(_conv_model(), str(p))
    if os.geteuid() != 0:  # root reads anything, so the real case needs another user
        p.chmod(0)
        assert "cannot be read (permission denied)" in _fails(p)
        p.chmod(0o644)
    import fvdesk.core.model.loading.read as reading  # the loader's reading stage

    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(reading, "open", denied, raising=False)  # shadows the builtin there only
    assert "cannot be read (permission denied)" in _fails(p)

    def io_error(*_a, **_k):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(reading, "open", io_error, raising=False)
    assert "cannot be read (Input/output error)" in _fails(p)


# -- inputs ------------------------------------------------------------------------------
def test_no_image_input(tmp_path: Path) -> None:
    emb = numpy_helper.from_array(np.ones((100, 16), np.float32), "emb")
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed")]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 128])
    out = helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 128, 16])
    p = tmp_path / "tokens.onnx"
    onnx.save(_model(nodes, [ids], [out], [emb]), str(p))
    msg = _fails(p, UnsupportedModelError)
    assert "no image-like input" in msg and "ids int64[1, 128]" in msg


def test_several_image_inputs(tmp_path: Path) -> None:
    p = test_models.two_image_inputs(tmp_path)
    with pytest.raises(AmbiguousInputError) as info:
        load_model(p)
    msg = _one_sentence(info.value, p)
    assert "left" in msg and "right" in msg and "input_name" in msg
    assert info.value.candidates == ["left", "right"]
    assert load_model(p, input_name="left").input.name == "left"
    assert "no input named 'middle'" in _fails(p, ModelLoadError, input_name="middle")


# -- operators -----------------------------------------------------------------------------
def test_unconvertible_first_operators_are_all_named_with_counts(tmp_path: Path) -> None:
    """Nothing before the unconvertible nodes: the model is refused, every blocker listed."""
    nodes = [
        helper.make_node("GlobalLpPool", ["x"], ["g"], name="lp"),
        helper.make_node("Hardmax", ["g"], ["h1"], name="hm1"),
        helper.make_node("Hardmax", ["h1"], ["h2"], name="hm2"),
    ]
    p = tmp_path / "ops.onnx"
    onnx.save(_model(nodes, [_image()], [_image("h2", (1, 3, 1, 1))]), str(p))
    msg = _fails(p, UnsupportedModelError)
    assert "GlobalLpPool (opset 17) x1" in msg, msg


def test_custom_domain_ops_first(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("FancyPool", ["x"], ["f"], name="fancy", domain="com.example"),
        helper.make_node("Relu", ["f"], ["y"], name="relu"),
    ]
    p = tmp_path / "custom.onnx"
    onnx.save(_model(nodes, [_image()], [_image("y")], domains=["com.example"]), str(p))
    msg = _fails(p, UnsupportedModelError)
    assert "custom-domain" in msg and "com.example::FancyPool x1" in msg


def test_unconvertible_tail_opens_the_convertible_part(tmp_path: Path) -> None:
    """The layers before unconvertible nodes load; the rest is listed as unavailable."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("GlobalLpPool", ["c"], ["g"], name="lp"),
        helper.make_node("Hardmax", ["g"], ["h1"], name="hm1"),
        helper.make_node("Hardmax", ["h1"], ["h2"], name="hm2"),
    ]
    p = tmp_path / "ops.onnx"
    onnx.save(_model(nodes, [_image()], [_image("h2", (1, 4, 1, 1))], [w]), str(p))
    m = load_model(p)
    assert [x.name for x in m.graph.layers] == ["conv"]
    assert m.conversion is not None and m.conversion.stopped_at == "lp"
    assert m.conversion.cut_ops == {"Hardmax": 2, "GlobalLpPool": 1}
    assert [x.name for x in m.graph.unavailable] == ["lp", "hm1", "hm2"]
    assert "lp" in (m.status_text or "") and "GlobalLpPool" in (m.status_text or "")


def test_unexpected_errors_are_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx2torch.converter

    def boom(*_a, **_k):
        raise RuntimeError("something deep inside\nwith a second line")

    monkeypatch.setattr(onnx2torch.converter, "convert", boom)
    p = tmp_path / "m.onnx"
    onnx.save(_conv_model(), str(p))
    msg = _fails(p)
    assert "converting to torch" in msg and "something deep inside with a second line" in msg


# -- external data -------------------------------------------------------------------------
def _save_external(tmp_path: Path, location: str = "weights.bin") -> Path:
    model = _conv_model()
    p = tmp_path / "ext.onnx"
    onnx.save(model, str(p), save_as_external_data=True, location=location, size_threshold=0)
    return p


def test_external_data_loads(tmp_path: Path) -> None:
    m = load_model(_save_external(tmp_path))
    assert m.parity is not None and m.parity.ok


def test_missing_external_data(tmp_path: Path) -> None:
    p = _save_external(tmp_path)
    (tmp_path / "weights.bin").unlink()
    msg = _fails(p)
    assert "weights.bin" in msg and "missing" in msg


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    inner = tmp_path / "models"
    inner.mkdir()
    p = _save_external(inner)
    model = onnx.load(str(p), load_external_data=False)
    (tmp_path / "secret.bin").write_bytes((inner / "weights.bin").read_bytes())
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save(model, str(p))
    msg = _fails(p)
    assert "outside the model's folder" in msg and "../secret.bin" in msg
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = str(tmp_path / "secret.bin")
    onnx.save(model, str(p))
    assert "outside the model's folder" in _fails(p)


# -- sidecar ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps({"preprocessing": "sepia"}), "unknown preprocessing preset 'sepia'"),
        (json.dumps({"preprocessing": {"range": [0, "x"]}}), "not numbers"),
        (json.dumps({"preprocessing": {"std": [0, 1, 1]}}), "zero std"),
        (json.dumps({"input_name": 3}), "'input_name'"),
    ],
)
def test_malformed_sidecar(tmp_path: Path, content: str, words: str) -> None:
    p = tmp_path / "m.onnx"
    onnx.save(_conv_model(), str(p))
    side = tmp_path / "m.fvdesk.json"
    side.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_model(p)
    msg = str(info.value)
    assert "\n" not in msg and str(side) in msg and words in msg, msg


def test_sidecar_labels_file_missing_is_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    onnx.save(_conv_model(), str(p))
    (tmp_path / "m.fvdesk.json").write_text(json.dumps({"labels": "gone.txt"}))
    m = load_model(p)
    assert m.labels_source == "none"
    assert any("gone.txt" in w for w in m.warnings)
