"""``load_model`` on real architectures: conversion, parity with onnxruntime, gradients, input specs.

Every torchvision architecture the foundation issue names, and the nine legacy zoo models shipped
inside the onnx package, must load, match onnxruntime on the outputs AND on a mid feature map,
and pass gradients back to the input.  Loaded models are cached per session (loading is the slow
part), so each architecture is exported and converted once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.loader import load_model
from fvdesk.core.model.preprocessing import PRESETS, Preprocessing
from tests import models as test_models

_LOADED: dict[str, LoadedModel] = {}


def _cached(key: str, path: Path) -> LoadedModel:
    if key not in _LOADED:
        _LOADED[key] = load_model(path)
    return _LOADED[key]


def _grad_reaches_input(model: LoadedModel, layer: str) -> float:
    """Backward from one layer's mean activation; returns the input gradient's norm."""
    spec = model.input
    size = (spec.height, spec.width)
    x01 = torch.rand(1, spec.channels, *size, generator=torch.Generator().manual_seed(1))
    x01.requires_grad_(True)
    act = model.extractor([layer])(model.prepare_input(x01))[layer]
    act.float().mean().backward()
    assert x01.grad is not None
    return float(x01.grad.abs().sum())


def _mid_feature(model: LoadedModel) -> str:
    feats = [x.name for x in model.graph.layers if x.kind == "feature"]
    return feats[len(feats) // 2]


# -- the demo model --------------------------------------------------------------------------
def test_demo_model_loads_with_its_metadata(demo_model_path: Path) -> None:
    m = load_model(demo_model_path)
    assert m.parity is not None and m.parity.ok, m.parity
    assert m.preprocessing.source == "metadata"
    assert m.labels and m.labels_source == "metadata"
    assert m.graph.logits is not None and m.graph.logits.channels == len(m.labels)
    assert m.input.layout == "NCHW" and m.input.channels == 3
    assert not m.module.training
    assert set(m.timings) >= {"read", "canonicalize", "convert", "parity", "total"}


# -- torchvision -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("arch", test_models.TORCHVISION_ARCHS)
def test_torchvision_architecture(arch: str, torchvision_onnx) -> None:
    m = _cached(arch, torchvision_onnx(arch))
    p = m.parity
    assert p is not None
    print(f"{arch}: {p.describe()}; feature {p.feature_layer} rel {p.feature_rel_diff:.1e}")
    assert p.rel_diff <= 1e-4 and p.feature_rel_diff is not None and p.feature_rel_diff <= 1e-4
    assert p.ok
    assert m.input == m.input.__class__("input", 0, "NCHW", 3, 224, 224, False, None)
    assert m.graph.logits is not None and m.graph.logits.channels == 1000
    assert m.labels_source == "imagenet" and m.labels[0] == "tench"
    assert m.preprocessing.source == "default" and m.preprocessing.preset == "imagenet"
    assert _grad_reaches_input(m, _mid_feature(m)) > 0
    assert not m.module.training


def test_every_visible_node_is_targetable(torchvision_onnx) -> None:
    """BatchNorm/Relu outputs stay layers: nothing in the user's graph is fused away."""
    m = _cached("resnet18", torchvision_onnx("resnet18"))
    original = onnx.load(str(m.path), load_external_data=False)
    ops = {n.op_type for n in original.graph.node}
    layer_ops = {x.op for x in m.graph.layers}
    assert {"Conv", "Relu", "MaxPool", "Add", "Gemm", "GlobalAveragePool"} <= layer_ops <= ops
    visible = [n.name for n in original.graph.node if n.op_type not in ("Identity", "Constant")]
    missing = [n for n in visible if n not in m.graph]
    assert missing == []
    with m.capture(["/layer1/layer1.0/relu/Relu", "/fc/Gemm"]) as store:
        m.forward(torch.rand(2, 3, 224, 224))
    assert store["/layer1/layer1.0/relu/Relu"].shape == (2, 64, 56, 56)
    assert store["/fc/Gemm"].shape == (2, 1000)


def test_convnext_channels_last_blocks(torchvision_onnx) -> None:
    m = _cached("convnext_tiny", torchvision_onnx("convnext_tiny"))
    norm = m.graph["/features/features.1/features.1.0/block/block.2/LayerNormalization"]
    assert (norm.layout, norm.shape) == ("NHWC", (None, 96, 56, 56))
    mlp = m.graph["/features/features.1/features.1.0/block/block.5/Add"]
    assert (mlp.layout, mlp.shape) == ("NHWC", (None, 96, 56, 56))
    assert m.graph["/features/features.1/features.1.0/block/block.0/Conv"].layout == "NCHW"
    act = m.activations(torch.rand(1, 3, 224, 224), [norm.name])[norm.name]
    assert act.shape == (1, 96, 56, 56)
    assert _grad_reaches_input(m, norm.name) > 0


def test_extractor_matches_capture(torchvision_onnx) -> None:
    m = _cached("googlenet", torchvision_onnx("googlenet"))
    layer = "/inception4a/Concat"
    x = torch.rand(1, 3, 224, 224)
    got = m.activations(x, [layer])[layer]
    with m.capture([layer]) as store:
        m.forward(x)
    torch.testing.assert_close(got, store[layer])
    assert got.shape == (1, 512, 14, 14)


# -- legacy zoo ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("path", test_models.light_zoo_models(), ids=lambda p: p.stem)
def test_legacy_zoo_model(path: Path) -> None:
    m = _cached(path.stem, path)
    p = m.parity
    assert p is not None and p.ok, p
    print(
        f"{path.stem}: {p.describe()}; feature {p.feature_layer} rel {p.feature_rel_diff:.1e}; {m.canonicalization}"
    )
    assert m.input.channels == 3 and (m.input.height, m.input.width) == (224, 224)
    assert m.graph.logits is not None and m.graph.logits.channels == 1000
    # Logits are the pre-softmax scores, not the probabilities the zoo graphs output.
    assert m.graph.logits.op != "Softmax"
    assert _grad_reaches_input(m, _mid_feature(m)) > 0
    # Nothing the user sees is fused or dropped (BatchNormalization, Dropout, LRN included).
    original = onnx.load(str(path))
    kept_ops = {"Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "Concat", "Sum"}
    kept_ops |= {"Dropout", "LRN", "Gemm", "Softmax", "Mul", "Add"}
    visible = {n.name for n in original.graph.node if n.name and n.op_type in kept_ops}
    assert visible and visible <= set(x.name for x in m.graph.layers)
    _check_zoo_reference(m, path)


def _check_zoo_reference(m: LoadedModel, path: Path) -> None:
    """onnx's backend test feeds arange(n)/n; compare when the reference output is informative."""
    ref_path = path.with_name(path.stem + "_output_0.pb")
    if not ref_path.exists():
        return
    t = onnx.TensorProto()
    t.ParseFromString(ref_path.read_bytes())
    ref = onnx.numpy_helper.to_array(t)
    if float(np.ptp(ref)) <= 1e-6 * float(np.abs(ref).max() + 1e-30):
        return  # constant weights give a uniform softmax: matching it proves nothing
    spec = m.input
    n = spec.channels * spec.height * spec.width
    x = torch.from_numpy(
        (np.arange(n).reshape(1, spec.channels, spec.height, spec.width) / n).astype(np.float32)
    )
    with torch.no_grad():
        out = m.module(x)
    np.testing.assert_allclose(out.numpy().reshape(ref.shape), ref, rtol=1e-3, atol=1e-5)


def test_zoo_model_with_asymmetric_avgpool_keeps_its_node() -> None:
    path = next(p for p in test_models.light_zoo_models() if "inception_v1" in p.stem)
    m = _cached(path.stem, path)
    assert any("AveragePool" in s for s in m.canonicalization)
    pools = [x for x in m.graph.layers if x.op == "AveragePool"]
    assert len(pools) == 1 and pools[0].shape[1:] == (1024, 1, 1)


def test_parity_above_tolerance_is_flagged(model_cache: Path) -> None:
    m = load_model(test_models.small_onnx(model_cache, "rgb"), parity_tolerance=1e-12)
    assert m.parity is not None and not m.parity.ok and m.parity.tolerance == 1e-12
    assert any("differs from onnxruntime" in w for w in m.warnings)
    # A broken conversion is caught on the feature map as well as the outputs.
    from fvdesk.core.model.loader import compute_parity

    m = load_model(test_models.small_onnx(model_cache, "rgb"))
    with torch.no_grad():
        for p in m.module.parameters():
            p.mul_(1.5)
        for name, b in m.module.named_buffers():
            if name.startswith("initializers") and b.is_floating_point():
                b.mul_(1.5)
    bad = compute_parity(m)
    assert not bad.ok and bad.feature_rel_diff is not None and bad.feature_rel_diff > 1e-2


# -- layouts, channels, fixed sizes -----------------------------------------------------------
def test_nhwc_input(model_cache: Path) -> None:
    m = load_model(test_models.small_onnx(model_cache, "nhwc"))
    assert (m.input.layout, m.input.channels, m.input.height, m.input.width) == ("NHWC", 3, 32, 32)
    assert m.parity is not None and m.parity.ok
    x = m.prepare_input(torch.rand(2, 3, 32, 32))
    assert x.shape == (2, 32, 32, 3)
    feats = [x for x in m.graph.layers if x.kind == "feature"]
    assert feats[0].op == "Transpose" and feats[0].shape[1:] == (3, 32, 32)  # the NCHW image
    assert all(f.shape[1] in (8, 16) for f in feats[1:])  # NCHW inside
    assert _grad_reaches_input(m, feats[0].name) > 0


def test_grayscale_input(model_cache: Path) -> None:
    m = load_model(test_models.small_onnx(model_cache, "gray"))
    assert (m.input.layout, m.input.channels) == ("NCHW", 1)
    assert m.prepare_input(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert m.parity is not None and m.parity.ok
    assert [x.op for x in m.graph.layers][:3] == ["Conv", "Relu", "MaxPool"]
    assert _grad_reaches_input(m, m.graph.layers[0].name) > 0


@pytest.mark.parametrize(
    ("kind", "fixed_size", "max_batch", "size"),
    [
        ("rgb", False, None, 32),
        ("view1", True, 1, 32),  # Reshape to a constant [1, -1]
        ("flatten", True, None, 32),  # Flatten + Linear: any batch, native size only
        ("dynamic", False, None, 224),  # dynamic H/W: the default size
    ],
)
def test_fixed_reshapes_are_found_by_trying(
    model_cache: Path, kind, fixed_size, max_batch, size
) -> None:
    m = load_model(test_models.small_onnx(model_cache, kind))
    assert (m.input.fixed_size, m.input.max_batch) == (fixed_size, max_batch)
    assert (m.input.height, m.input.width) == (size, size)
    assert m.input.batch_ok == (max_batch is None)


# -- preprocessing and labels -----------------------------------------------------------------
def _with_metadata(src: Path, dst: Path, props: dict[str, str]) -> Path:
    model = onnx.load(str(src))
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return dst


def test_preprocessing_sources(model_cache: Path, tmp_path: Path) -> None:
    src = test_models.small_onnx(model_cache, "rgb")
    meta = {
        "fvdesk.preprocessing": json.dumps(
            {"range": [0, 255], "mean": [1, 2, 3], "std": [4, 5, 6], "bgr": True}
        )
    }
    m = load_model(_with_metadata(src, tmp_path / "a.onnx", meta), check_parity=False)
    assert m.preprocessing == Preprocessing(
        "custom", 0, 255, (1, 2, 3), (4, 5, 6), True, "metadata"
    )

    m = load_model(
        _with_metadata(src, tmp_path / "b.onnx", {"fvdesk.preprocessing": "caffe"}),
        check_parity=False,
    )
    assert (m.preprocessing.preset, m.preprocessing.source, m.preprocessing.bgr) == (
        "caffe",
        "metadata",
        True,
    )

    winml = {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "NominalRange_0_255"}
    m = load_model(_with_metadata(src, tmp_path / "c.onnx", winml), check_parity=False)
    assert (m.preprocessing.lo, m.preprocessing.hi, m.preprocessing.bgr) == (0, 255, True)

    plain = tmp_path / "d.onnx"
    plain.write_bytes(src.read_bytes())
    m = load_model(plain, check_parity=False)
    assert m.preprocessing.source == "default" and m.preprocessing.preset == "imagenet"
    assert any("default" in w for w in m.warnings)

    # The user's choice goes to the sidecar and wins next time (metadata absent).
    m.set_preprocessing("symmetric")
    sidecar = tmp_path / "d.fvdesk.json"
    assert json.loads(sidecar.read_text())["preprocessing"] == {"preset": "symmetric"}
    m2 = load_model(plain, check_parity=False)
    assert m2.preprocessing.preset == "symmetric" and m2.preprocessing.source == "sidecar"
    custom = Preprocessing("custom", 0, 255, (120.0, 110.0, 100.0), (1.0, 1.0, 1.0), True)
    m2.set_preprocessing(custom)
    m3 = load_model(plain, check_parity=False)
    assert (
        m3.preprocessing.lo,
        m3.preprocessing.hi,
        m3.preprocessing.mean,
        m3.preprocessing.bgr,
    ) == (
        0,
        255,
        (120.0, 110.0, 100.0),
        True,
    )
    # An explicit argument beats everything.
    assert (
        load_model(plain, preprocessing="byte", check_parity=False).preprocessing.preset == "byte"
    )
    assert (
        load_model(plain, preprocessing=PRESETS["unit"], check_parity=False).preprocessing.preset
        == "unit"
    )


def test_the_users_saved_preprocessing_beats_the_models_metadata(
    model_cache: Path, tmp_path: Path
) -> None:
    """The app says a choice is "remembered next to the model": on reopen it must still be the
    one in force, even when the file's metadata names another, and the source says so."""
    src = test_models.small_onnx(model_cache, "rgb")
    path = _with_metadata(src, tmp_path / "m.onnx", {"fvdesk.preprocessing": "caffe"})
    m = load_model(path, check_parity=False)
    assert (m.preprocessing.preset, m.preprocessing.source) == ("caffe", "metadata")
    m.set_preprocessing("symmetric")
    again = load_model(path, check_parity=False)
    assert (again.preprocessing.preset, again.preprocessing.source) == ("symmetric", "sidecar")


def test_label_sources(model_cache: Path, tmp_path: Path) -> None:
    src = test_models.small_onnx(model_cache, "rgb")  # 10 classes
    names = [f"class {i}" for i in range(10)]
    m = load_model(
        _with_metadata(src, tmp_path / "a.onnx", {"fvdesk.labels": json.dumps(names)}),
        check_parity=False,
    )
    assert (m.labels, m.labels_source) == (names, "metadata")

    plain = tmp_path / "b.onnx"
    plain.write_bytes(src.read_bytes())
    m = load_model(plain, check_parity=False)
    assert (m.labels, m.labels_source) == (None, "none")

    txt = tmp_path / "classes.txt"
    txt.write_text("\n".join(names[::-1]) + "\n")
    m.set_labels(txt)
    assert m.labels_source == "user"
    assert json.loads((tmp_path / "b.fvdesk.json").read_text())["labels"] == "classes.txt"
    m = load_model(plain, check_parity=False)
    assert (m.labels, m.labels_source) == (names[::-1], "sidecar")

    js = tmp_path / "classes.json"
    js.write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    m.set_labels(js)
    assert load_model(plain, check_parity=False).labels == names


def test_sidecar_picks_the_input(tmp_path: Path) -> None:
    path = test_models.two_image_inputs(tmp_path)
    from fvdesk.core.model.sidecar import save_sidecar

    save_sidecar(path, input_name="right")
    m = load_model(path)
    assert (m.input.name, m.input.index) == ("right", 1)
    assert set(m.extra_inputs) == {"input_1"}
    out = m.forward(torch.rand(1, 3, 16, 16))
    assert out.shape == (1, 4)
    assert m.parity is not None and m.parity.ok


# -- progress on a large model ----------------------------------------------------------------
@pytest.mark.slow
def test_progress_on_a_100mb_model(model_cache: Path) -> None:
    path = test_models.big_onnx(model_cache, 100)
    assert path.stat().st_size > 95e6
    events: list[tuple[float, str]] = []
    m = load_model(path, progress=lambda f, msg: events.append((f, msg)))
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert sum(1 for _, msg in events if msg.startswith("Reading")) >= 10  # chunked reading
    assert {"Converting to torch", "Checking parity with onnxruntime"} <= {msg for _, msg in events}
    assert all(isinstance(msg, str) and msg for _, msg in events)
    assert m.parity is not None and m.parity.ok
    assert m.input.height == 64 and m.graph.logits_name == "fc2"


def test_demo_model_defaults_to_its_training_size(demo_model_path):
    """A size-agnostic graph renders at the size its metadata says it was trained at."""
    m = load_model(demo_model_path)
    assert (m.input.height, m.input.width) == (64, 64) and not m.input.fixed_size
    conv = m.graph["/features/block1/conv/Conv"]
    assert conv.shape[1:] == (16, 64, 64)


@pytest.mark.parametrize("bad", ['"sixty-four"', "[64]", "2"])
def test_bad_input_size_metadata_names_the_file(demo_model_path, tmp_path, bad):
    from fvdesk.core.errors import ConfigError

    proto = onnx.load(demo_model_path)
    for prop in proto.metadata_props:
        if prop.key == "fvdesk.input_size":
            prop.value = bad
    path = tmp_path / "sized.onnx"
    onnx.save(proto, path)
    with pytest.raises(ConfigError, match=r"sized\.onnx.*fvdesk\.input_size"):
        load_model(path, check_parity=False)
