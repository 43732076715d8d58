"""The sidecar file and label sources, without loading a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fvdesk.core.errors import ConfigError
from fvdesk.core.model.labels import (
    default_labels,
    imagenet_labels,
    labels_from_metadata,
    read_labels_file,
)
from fvdesk.core.model.preprocessing import PRESETS, Preprocessing, parse_preprocessing
from fvdesk.core.model.sidecar import read_sidecar, save_sidecar, sidecar_path


def test_sidecar_path() -> None:
    assert sidecar_path("/a/b/resnet.onnx") == Path("/a/b/resnet.fvdesk.json")


def test_save_and_read_round_trip(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    assert read_sidecar(model) is None
    save_sidecar(model, preprocessing=PRESETS["caffe"])
    (tmp_path / "names.txt").write_text("a\nb\n")
    save_sidecar(model, labels=tmp_path / "names.txt", input_name="data")
    data = json.loads(sidecar_path(model).read_text())
    assert data == {
        "version": 1,
        "preprocessing": {"preset": "caffe"},
        "labels": "names.txt",
        "input_name": "data",
    }
    side = read_sidecar(model)
    assert side is not None
    assert side.preprocessing == Preprocessing(**{**PRESETS["caffe"].__dict__, "source": "sidecar"})
    assert side.labels == (tmp_path / "names.txt").resolve() and side.input_name == "data"
    custom = Preprocessing("custom", -1, 1, (0.5,), (0.25,), False)
    save_sidecar(model, preprocessing=custom)
    got = read_sidecar(model).preprocessing
    assert (got.preset, got.lo, got.hi, got.mean, got.std, got.source) == (
        "custom",
        -1,
        1,
        (0.5,),
        (0.25,),
        "sidecar",
    )
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_save_replaces_a_malformed_sidecar(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    sidecar_path(model).write_text("{broken")
    save_sidecar(model, preprocessing=PRESETS["unit"])
    assert read_sidecar(model).preprocessing.preset == "unit"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("imagenet", ("imagenet", 0.0, 1.0, PRESETS["imagenet"].mean, False)),
        ({"preset": "byte"}, ("byte", 0.0, 255.0, (0.0, 0.0, 0.0), False)),
        (
            {"range": [0, 255], "mean": [1, 2, 3], "bgr": True},
            ("custom", 0.0, 255.0, (1.0, 2.0, 3.0), True),
        ),
        ({"preset": "caffe", "bgr": True}, ("caffe", 0.0, 255.0, PRESETS["caffe"].mean, True)),
        ({"range": [-1, 1]}, ("custom", -1.0, 1.0, (0.0, 0.0, 0.0), False)),
    ],
)
def test_parse_preprocessing(value, expected) -> None:
    p = parse_preprocessing(value, "metadata", "here")
    assert (p.preset, p.lo, p.hi, p.mean, p.bgr) == expected and p.source == "metadata"


@pytest.mark.parametrize(
    "value",
    ["sepia", 3, {"range": [1, 1]}, {"mean": [1, 2]}, {"bgr": "yes"}, {"std": "x"}],
)
def test_parse_preprocessing_rejects(value) -> None:
    with pytest.raises(ConfigError) as info:
        parse_preprocessing(value, "metadata", "The sidecar x.json")
    assert str(info.value).startswith("The sidecar x.json") and "\n" not in str(info.value)


def test_labels_files(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("\ufeffcat\ndog\n\n")
    assert read_labels_file(txt) == ["cat", "dog"]
    js = tmp_path / "a.json"
    js.write_text(json.dumps(["x", "y"]))
    assert read_labels_file(js) == ["x", "y"]
    js.write_text(json.dumps({"1": "one", "0": "zero"}))
    assert read_labels_file(js) == ["zero", "one"]
    for content, words in [("", "is empty"), ("{bad", "not valid JSON"), ('{"a": 1}', "JSON list")]:
        js.write_text(content)
        with pytest.raises(ConfigError, match=words):
            read_labels_file(js)
    with pytest.raises(ConfigError, match="does not exist"):
        read_labels_file(tmp_path / "none.txt")


def test_labels_from_metadata() -> None:
    assert labels_from_metadata({"fvdesk.labels": '["a", "b"]'}) == ["a", "b"]
    assert labels_from_metadata({"names": "{0: 'person', 1: 'bicycle'}"}) == ["person", "bicycle"]
    assert labels_from_metadata({"classes": '{"0": "a", "2": "c"}'}) == ["a", "1", "c"]
    assert labels_from_metadata({"labels": "not json at all"}) is None
    assert labels_from_metadata({}) is None


def test_builtin_imagenet() -> None:
    names = imagenet_labels()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
    assert default_labels(1000)[1] == "imagenet" and default_labels(10) == (None, "none")
