"""The embedded demo model: its pattern generator, the shipped ONNX file and its training script.

The engine's tests judge renders against the demo model, so these tests pin down what makes
that meaningful: each class has one unambiguous cue (stripe orientation is checked in the
Fourier domain), the shipped model really recognizes fresh images, it carries its labels and
preprocessing, and the training script still runs end to end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fvdesk.core.patterns import CLASSES, generate

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "resources" / "models" / "demo.onnx"
LABELS_TXT = REPO / "resources" / "models" / "demo.labels.txt"
TRAIN_SCRIPT = REPO / "tools" / "train_demo_model.py"
EXPECTED_PREPROCESSING = {"range": [0, 1], "mean": [0.5] * 3, "std": [0.25] * 3, "bgr": False}

# Direction of intensity variation (degrees, x right / y down) = angle of the spectral peak.
STRIPE_ANGLES = {
    "horizontal stripes": 90,  # varies along y: energy on the vertical-frequency axis
    "vertical stripes": 0,
    "diagonal stripes /": 45,  # lines along x + y = c (bottom-left to top-right)
    "diagonal stripes \\": 135,
}


# ---------------------------------------------------------------------------------- generator


def test_classes_are_the_documented_eight() -> None:
    assert CLASSES == (
        "horizontal stripes",
        "vertical stripes",
        "diagonal stripes /",
        "diagonal stripes \\",
        "checkerboard",
        "dots",
        "rings",
        "colour blobs",
    )


@pytest.mark.parametrize("size", [16, 37, 64])
def test_generate_shapes_dtypes_and_range(size: int) -> None:
    images, labels = generate(50, size=size, seed=1)
    assert images.shape == (50, 3, size, size)
    assert images.dtype == np.float32
    assert labels.shape == (50,)
    assert labels.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(labels.tolist()) <= set(range(len(CLASSES)))
    assert np.isfinite(images).all()


def test_generate_empty_and_bad_arguments() -> None:
    images, labels = generate(0, size=32, seed=0)
    assert images.shape == (0, 3, 32, 32) and labels.shape == (0,)
    with pytest.raises(ValueError):
        generate(4, seed=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        generate(-1)


def test_generate_is_reproducible() -> None:
    a_img, a_lab = generate(40, size=32, seed=7)
    b_img, b_lab = generate(40, size=32, seed=7)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = generate(40, size=32, seed=8)
    assert not np.array_equal(a_img, c_img)
    # An explicit generator continues its stream: same as the seed on the first draw only.
    rng = np.random.default_rng(7)
    first, _ = generate(40, size=32, rng=rng)
    second, _ = generate(40, size=32, rng=rng)
    np.testing.assert_array_equal(first, a_img)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("n", [8, 83, 1000])
def test_generate_classes_are_balanced_and_shuffled(n: int) -> None:
    _, labels = generate(n, size=16, seed=3)
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1
    assert not np.array_equal(labels, np.sort(labels)) or n <= len(CLASSES)


def test_every_image_shows_its_pattern() -> None:
    """Foreground and background colours are kept apart, so no image is (nearly) flat."""
    images, labels = generate(800, size=64, seed=11)
    spread = images.std(axis=(2, 3)).max(axis=1)
    assert spread.min() > 0.03, [CLASSES[c] for c in labels[spread <= 0.03]]


def test_colour_is_not_a_class_cue() -> None:
    """Mean colours of the pattern classes are alike: only the structure tells them apart."""
    images, labels = generate(2400, size=32, seed=12)
    means = np.stack([images[labels == c].mean(axis=(0, 2, 3)) for c in range(len(CLASSES))])
    assert np.abs(means - means.mean(axis=0)).max() < 0.08


def test_generate_is_vectorized() -> None:
    """Training draws fresh images every step, so generating must not loop over images in
    Python: the number of Python calls stays the same whatever the batch size."""

    def calls(n: int) -> int:
        count = 0

        def prof(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
            nonlocal count
            count += event == "call"

        sys.setprofile(prof)
        try:
            generate(n, size=32, seed=0)
        finally:
            sys.setprofile(None)
        return count

    calls(8)  # first use: imports and caches
    small, big = calls(64), calls(1024)
    assert big < 1.5 * small, (small, big)  # a per-image loop would make ``big`` >= 1024


def _orientation_fractions(images: np.ndarray, half_width: float = 15.0) -> dict[int, np.ndarray]:
    """Per image, the share of non-DC spectral power within +-half_width of 0/45/90/135 deg.

    Power is summed over RGB channels (two colours can have equal grey levels) and a Hann
    window suppresses the cross-shaped leakage from the image borders.
    """
    size = images.shape[-1]
    centred = images - images.mean(axis=(2, 3), keepdims=True)
    window = np.hanning(size)
    power = (np.abs(np.fft.fft2(centred * window[:, None] * window[None, :])) ** 2).sum(axis=1)
    ky = np.fft.fftfreq(size)[:, None]  # axis 0 of an image is y
    kx = np.fft.fftfreq(size)[None, :]
    angle = np.mod(np.degrees(np.arctan2(ky, kx)), 180.0)
    nonzero = (kx**2 + ky**2) > 0
    total = power[:, nonzero].sum(axis=1)
    out = {}
    for target in (0, 45, 90, 135):
        dist = np.abs((angle - target + 90.0) % 180.0 - 90.0)
        out[target] = power[:, (dist <= half_width) & nonzero].sum(axis=1) / total
    return out


@pytest.mark.parametrize("name", list(STRIPE_ANGLES))
def test_stripe_orientation_is_the_cue(name: str) -> None:
    images, labels = generate(480, size=64, seed=21)
    fractions = _orientation_fractions(images[labels == CLASSES.index(name)])
    expected = STRIPE_ANGLES[name]
    assert fractions[expected].min() > 0.7
    for other, frac in fractions.items():
        if other != expected:
            assert frac.max() < 0.15, (name, other, float(frac.max()))


def test_checkerboard_has_both_diagonal_peaks() -> None:
    """A checkerboard's spectrum sits on both diagonals, unlike any stripe class."""
    images, labels = generate(320, size=64, seed=22)
    fractions = _orientation_fractions(images[labels == CLASSES.index("checkerboard")])
    assert fractions[45].min() > 0.25 and fractions[135].min() > 0.25


# -------------------------------------------------------------------------- shipped model


@pytest.fixture(scope="module")
def demo_model() -> onnx.ModelProto:
    assert DEMO.is_file(), f"missing {DEMO}; run tools/train_demo_model.py"
    return onnx.load(str(DEMO))


@pytest.fixture(scope="module")
def demo_meta(demo_model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in demo_model.metadata_props}


def _preprocess(images01: np.ndarray, meta: dict[str, str]) -> np.ndarray:
    prep = json.loads(meta["fvdesk.preprocessing"])
    lo, hi = prep["range"]
    x = images01 * (hi - lo) + lo
    if prep["bgr"]:
        x = x[:, ::-1]
    mean = np.asarray(prep["mean"], dtype=np.float32)[None, :, None, None]
    std = np.asarray(prep["std"], dtype=np.float32)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def test_shipped_model_metadata(demo_model: onnx.ModelProto, demo_meta: dict[str, str]) -> None:
    onnx.checker.check_model(demo_model)
    assert json.loads(demo_meta["fvdesk.labels"]) == list(CLASSES)
    assert json.loads(demo_meta["fvdesk.preprocessing"]) == EXPECTED_PREPROCESSING
    assert demo_meta.get("model_author")
    assert demo_model.doc_string
    assert LABELS_TXT.read_text(encoding="utf-8").splitlines() == list(CLASSES)
    assert DEMO.stat().st_size < 2 * 1024 * 1024


def test_shipped_model_graph(demo_model: onnx.ModelProto) -> None:
    """One image input with dynamic batch/height/width, logits out, tree-named nodes."""
    graph = demo_model.graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    ops = [n.op_type for n in graph.node]
    assert "Identity" not in ops  # onnx2torch 1.5.15 cannot convert them
    names = {n.name for n in graph.node}
    assert {f"/features/block{i}/conv/Conv" for i in range(1, 5)} <= names
    assert "/classifier/Gemm" in names
    assert graph.node[-1].output[0] == "logits"


def test_shipped_model_classifies_fresh_images(demo_meta: dict[str, str]) -> None:
    sess = ort.InferenceSession(str(DEMO), providers=["CPUExecutionProvider"])
    images, labels = generate(512, size=64, seed=20240611)
    pred = sess.run(["logits"], {"image": _preprocess(images, demo_meta)})[0].argmax(axis=1)
    accuracy = float((pred == labels).mean())
    assert accuracy >= 0.95, accuracy
    # Global average pooling: other input sizes work too (the engine renders at many sizes).
    images, labels = generate(64, size=96, seed=5)
    pred = sess.run(["logits"], {"image": _preprocess(images, demo_meta)})[0].argmax(axis=1)
    assert float((pred == labels).mean()) >= 0.9


def test_shipped_model_converts_with_onnx2torch(
    demo_model: onnx.ModelProto, demo_meta: dict[str, str]
) -> None:
    """The engine optimizes through onnx2torch, so the conversion must be exact."""
    torch = pytest.importorskip("torch")
    from onnx2torch import convert

    x = _preprocess(generate(8, size=48, seed=9)[0], demo_meta)
    sess = ort.InferenceSession(str(DEMO), providers=["CPUExecutionProvider"])
    expected = sess.run(["logits"], {"image": x})[0]
    with torch.no_grad():
        got = convert(demo_model).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------- training script


@pytest.fixture(scope="module")
def train_script():
    spec = importlib.util.spec_from_file_location("fvdesk_train_demo_model", TRAIN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_training_script_runs_end_to_end(
    train_script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["--out", str(out), "--steps", "3", "--batch", "8", "--eval-images", "16"]
        assert train_script.main(argv) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        runs.append((out, summary))
    out, summary = runs[0]
    assert summary["steps"] == 3 and summary["params"] > 0
    # The reported accuracy is the exported model's on the script's own evaluation images.
    eval_images, eval_labels = generate(16, 64, seed=train_script.EVAL_SEED_OFFSET)
    sess = ort.InferenceSession(str(out / "demo.onnx"), providers=["CPUExecutionProvider"])
    pred = sess.run(["logits"], {"image": train_script.preprocess(eval_images)})[0].argmax(1)
    assert summary["accuracy"] == round(float((pred == eval_labels).mean()), 4)

    model_path = out / "demo.onnx"
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["fvdesk.labels"]) == list(CLASSES)
    assert json.loads(meta["fvdesk.preprocessing"]) == EXPECTED_PREPROCESSING
    assert (out / "demo.labels.txt").read_text(encoding="utf-8").splitlines() == list(CLASSES)
    assert stat.S_IMODE(os.stat(model_path).st_mode) & 0o044  # readable by others, not 0600
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"image": np.zeros((2, 3, 40, 56), np.float32)})[0]
    assert logits.shape == (2, len(CLASSES))

    # Fixed seeds and deterministic kernels: the same command gives the same bytes.
    assert model_path.read_bytes() == (runs[1][0] / "demo.onnx").read_bytes()
