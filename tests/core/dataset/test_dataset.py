"""Dataset examples: decoding, the activation pass, streaming statistics, receptive fields, the
cache, and facets from dataset clusters, on the demo model and generated pattern images."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fvdesk.core import imagefolder as folder_mod
from fvdesk.core.dataset.cache import cache_size, clear_cache
from fvdesk.core.dataset.kmeans import kmeans
from fvdesk.core.dataset.receptive import receptive_fields
from fvdesk.core.dataset.stats import StreamingHistogram, StreamingTopK
from fvdesk.core.errors import DatasetError
from fvdesk.core.imagefolder import fit_image, load_image, scan_folder
from fvdesk.core.jobs.job import ExamplesJob, Job
from fvdesk.core.jobs.passes import ExamplesResult
from fvdesk.core.jobs.run import run_job
from fvdesk.core.model.loader import load_model
from fvdesk.core.model.preprocessing import preset
from fvdesk.core.optim.drive import drive
from fvdesk.core.optim.events import NoticeEvent, ProgressEvent
from fvdesk.core.patterns import CLASSES, generate
from tests import builders as B
from tests.images import class_dir, pattern_folder, save_png

LOGITS = "/classifier/Gemm"
BLOCK2 = "/features/block2/relu/Relu"
BLOCK3 = "/features/block3/relu/Relu"
PER_CLASS = 12


pytestmark = pytest.mark.usefixtures("examples_cache")


@pytest.fixture(scope="module")
def demo(demo_model_path):
    return load_model(demo_model_path, check_parity=False)


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    """12 pattern images of each of the 8 classes, one sub-folder per class."""
    return pattern_folder(tmp_path_factory.mktemp("patterns"), PER_CLASS)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


def run_pass(model, root: Path, layers, **kw) -> tuple[ExamplesResult, list]:
    events: list = []
    spec = ExamplesJob(str(root), tuple(layers), **kw)
    result = drive(run_job(model, Job.for_model(model, spec)), events.append)
    return result, events


# -- the finding a user checks first ---------------------------------------------------------------
def test_top9_of_each_class_logit_are_that_class(demo, patterns) -> None:
    result, events = run_pass(demo, patterns, [LOGITS])
    assert result.images == PER_CLASS * len(CLASSES) and not result.skipped
    assert isinstance(events[-1], ProgressEvent) and events[-1].done == events[-1].total
    le = result.layers[LOGITS]
    for c in range(len(CLASSES)):
        top = le.unit(c).top
        assert len(top) == 9
        hits = sum(ex.rel.startswith(class_dir(c) + "/") for ex in top)
        assert hits >= 8, (CLASSES[c], [ex.rel for ex in top])
        assert top[0].value >= top[-1].value
        bottom = le.unit(c).bottom
        assert not any(ex.rel.startswith(class_dir(c) + "/") for ex in bottom)
        assert bottom[0].value <= bottom[-1].value < top[-1].value


# -- streaming statistics ----------------------------------------------------------------------------
def test_streaming_topk_equals_brute_force_with_ties_and_any_batching() -> None:
    rng = np.random.default_rng(0)
    n, u, k = 300, 6, 9
    v = rng.standard_normal((n, u)).astype(np.float32)
    v[:, 5] = np.round(rng.random(n) * 3)  # many ties
    pos = rng.integers(0, 50, (n, u))
    for step in (1, 7, 64, 300):
        top, bot = StreamingTopK(u, k), StreamingTopK(u, k, largest=False)
        for i in range(0, n, step):
            ids = np.arange(i, min(i + step, n))
            top.update(v[ids], ids, pos[ids])
            bot.update(v[ids], ids, pos[ids])
        for j in range(u):
            want = np.lexsort((np.arange(n), -v[:, j]))[:k]
            assert top.index[j].tolist() == want.tolist()
            assert top.pos[j].tolist() == pos[want, j].tolist()
            assert bot.index[j].tolist() == np.lexsort((np.arange(n), v[:, j]))[:k].tolist()
    assert top.values.shape == (u, k)  # O(units x k), whatever n


def test_streaming_histogram_counts_percentiles_and_merging() -> None:
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.normal(0, 1, 2000), rng.normal(50, 5, 500)])  # range grows later
    vals = np.stack([a, a * 1e-3, np.zeros_like(a)], 1)
    h = StreamingHistogram(3, 64)
    for i in range(0, len(a), 100):
        h.update(vals[i : i + 100])
    for u in range(3):
        view = h.view(u)
        assert view.count == len(a) and view.counts.sum() == len(a)
        assert view.minimum == vals[:, u].min() and view.maximum == vals[:, u].max()
    view = h.view(0)
    width = view.edges[1] - view.edges[0]
    for q in (10, 50, 90, 99):
        assert abs(view.percentile(q) - np.percentile(a, q)) <= width
    assert abs(view.fraction_below(float(np.median(a))) - 0.5) < 0.05
    assert view.fraction_below(1e9) == 1.0 and view.fraction_below(-1e9) == 0.0


def test_pass_topk_equals_brute_force_on_the_model(demo, patterns, tmp_path) -> None:
    small = tmp_path / "small"
    for p in sorted(patterns.rglob("*.png"))[:40]:
        (small / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, small / p.parent.name / p.name)
    result, _ = run_pass(demo, small, [BLOCK2], top=5, bottom=5, batch=7)
    scan = scan_folder(small)
    x = np.stack([fit_image(small / f.rel, 64, 64)[0] for f in scan.images])
    with torch.no_grad():
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        act = demo.extractor([BLOCK2])(demo.prepare_input(xt))[BLOCK2].flatten(2)
    mx, amx = act.max(-1)
    le = result.layers[BLOCK2]
    for u in range(act.shape[1]):
        want = np.lexsort((np.arange(len(x)), -mx[:, u].numpy()))[:5]
        got = le.unit(u).top
        assert [ex.index for ex in got] == want.tolist()
        assert np.allclose([ex.value for ex in got], mx[want, u].numpy(), rtol=1e-4, atol=1e-5)
        gw = demo.graph[BLOCK2].spatial[1]
        assert [ex.grid[0] * gw + ex.grid[1] for ex in got] == amx[want, u].tolist()
    mean = act.mean(-1)[:, 3].numpy()
    assert abs(le.unit(3).histogram.mean - mean.mean()) < 1e-4


def test_both_engines_give_the_same_examples(demo, patterns) -> None:
    ort, _ = run_pass(demo, patterns, [BLOCK3], engine="onnxruntime")
    clear_cache()
    tor, _ = run_pass(demo, patterns, [BLOCK3], engine="torch")
    assert (ort.engine, tor.engine) == ("onnxruntime", "torch") and tor.computed == 96
    for u in (0, 17, 63):
        a, b = ort.layers[BLOCK3].unit(u), tor.layers[BLOCK3].unit(u)
        assert np.allclose([e.value for e in a.top], [e.value for e in b.top], rtol=1e-4, atol=1e-4)
        assert a.top[0].rel == b.top[0].rel


# -- receptive fields ----------------------------------------------------------------------------
def _conv_stack():
    from onnx import helper, numpy_helper

    def w(name, cout, cin, k):
        return numpy_helper.from_array(np.zeros((cout, cin, k, k), np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="r1"),
        helper.make_node("MaxPool", ["ar"], ["b"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv", ["b", "w2"], ["c"], name="c2", pads=[2, 2, 2, 2], dilations=[2, 2]
        ),
        helper.make_node("Conv", ["c", "w3"], ["d"], name="c3", pads=[2, 2, 2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["d"], ["g"], name="gap"),
        helper.make_node("Sigmoid", ["g"], ["gs"], name="gate"),
        helper.make_node("Mul", ["d", "gs"], ["e"], name="se"),  # a squeeze-excitation gate
        helper.make_node(
            "Conv",
            ["e", "w4"],
            ["f"],
            name="c4",
            auto_pad="SAME_UPPER",
            kernel_shape=[3, 3],
            strides=[2, 2],
        ),  # fmt: skip
        helper.make_node("Flatten", ["f"], ["h"], name="flat"),
    ]
    inits = [w("w1", 4, 3, 3), w("w2", 4, 4, 3), w("w3", 4, 4, 5), w("w4", 4, 4, 3)]
    return B.onnx_model(nodes, [B.tensor("x", [1, 3, 32, 32])], [B.tensor("h", None)], inits,
                        opset=None, ir=None, name="stack")  # fmt: skip


def test_receptive_field_of_a_known_conv_stack_is_the_hand_computed_one() -> None:
    f = receptive_fields(_conv_stack(), "x", (32, 32))
    # size r, jump j, centre of unit 0 s, by hand (r' = r + (k_eff - 1) j, s' = s + ((k_eff-1)/2 - p) j):
    # conv3 p1: r 3, j 1, s 0 | pool2 s2: r 4, j 2, s .5 | conv3 dil2 p2 (k_eff 5): r 12, j 2, s .5
    # conv5 s2 p2: r 20, j 4, s .5 | SE gate: unchanged | conv3 s2 SAME on 8 (pad 0+1): r 28, j 8, s 4.5
    want = {"a": (3, 1, 0.0, 32), "b": (4, 2, 0.5, 16), "c": (12, 2, 0.5, 16),
            "d": (20, 4, 0.5, 8), "e": (20, 4, 0.5, 8), "f": (28, 8, 4.5, 4)}  # fmt: skip
    for t, (r, j, s, n) in want.items():
        for axis in (f[t].y, f[t].x):
            assert (axis.size, axis.jump, axis.start, axis.n) == (r, j, s, n), t
    assert f["g"].full and f["h"].full
    # unit (1, 2) of "d": centre (0.5 + 4, 0.5 + 8), 20 px wide, clamped to the 32 px input
    assert f["d"].box(1, 2) == (0.0, 0.0, 19.0, 15.0)
    assert f["a"].box(5, 7) == (6.0, 4.0, 9.0, 7.0)


def test_demo_layers_fields(demo) -> None:
    from fvdesk.core.dataset.receptive import layer_field

    # each block: conv 3x3 pad 1, then a 2x2 pool
    assert layer_field(demo, "/features/block1/conv/Conv").size == (3, 3)
    assert layer_field(demo, BLOCK2).size == (8, 8) and layer_field(demo, BLOCK2).jump == (2, 2)
    assert layer_field(demo, "/features/block4/relu/Relu").size == (38, 38)
    assert layer_field(demo, LOGITS).full


# -- the cache --------------------------------------------------------------------------------------
def test_cache_is_reused_and_only_changed_files_recomputed(
    demo, patterns, tmp_path, examples_cache
) -> None:
    root = copy_tree(patterns, tmp_path / "imgs")
    first, _ = run_pass(demo, root, [LOGITS, BLOCK2])
    assert first.computed == 96 and cache_size() > 0
    again, _ = run_pass(demo, root, [LOGITS, BLOCK2])
    assert again.computed == 0
    assert [e.rel for e in again.layers[LOGITS].unit(2).top] == [
        e.rel for e in first.layers[LOGITS].unit(2).top
    ]
    # change one file: a checkerboard image becomes the strongest "horizontal stripes" example
    target = sorted((root / class_dir(4)).glob("*.png"))[0]
    best = first.layers[LOGITS].unit(0).top[0].rel
    shutil.copyfile(root / best, target)
    os.utime(target, ns=(1, 1))
    added = root / "new" / "extra.png"
    save_png(added, generate(1, 64, seed=99)[0][0])
    changed, _ = run_pass(demo, root, [LOGITS, BLOCK2])
    assert changed.computed == 2
    top = [e.rel for e in changed.layers[LOGITS].unit(0).top]
    assert target.relative_to(root).as_posix() in top[:2]
    # a removed file disappears from the results; nothing is recomputed
    (root / best).unlink()
    gone, _ = run_pass(demo, root, [LOGITS])
    assert gone.computed == 0 and gone.images == 96
    assert best not in [e.rel for e in gone.layers[LOGITS].unit(0).top]
    # another preprocessing or model never uses these rows
    before = demo.preprocessing
    demo.set_preprocessing(preset("imagenet"), persist=False)
    try:
        other, _ = run_pass(demo, root, [LOGITS])
    finally:
        demo.preprocessing = before
    assert other.computed == 96
    freed = clear_cache(demo.sha256)
    assert freed > 0 and cache_size() == 0
    assert not any(examples_cache.rglob("*.rows")) and not any(root.rglob("*.rows"))


def test_interrupted_cancelled_and_vanished_passes_keep_what_was_done(
    demo, patterns, tmp_path
) -> None:
    import re

    root = copy_tree(patterns, tmp_path / "imgs")
    job = Job.for_model(demo, ExamplesJob(str(root), (LOGITS,), batch=16))

    def interrupt(ev):
        if isinstance(ev, ProgressEvent) and ev.done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(run_job(demo, job), interrupt)
    moved = tmp_path / "moved"

    def vanish(ev):
        if isinstance(ev, ProgressEvent) and ev.done >= 16 and root.exists():
            shutil.move(str(root), str(moved))  # keeps the files' mtimes

    with pytest.raises(DatasetError, match="disappeared during the pass.*kept in the cache") as e:
        drive(run_job(demo, job), vanish)
    kept = int(re.search(r"the (\d+) images done", str(e.value)).group(1))
    assert 16 <= kept <= 64
    shutil.move(str(moved), str(root))
    stop = {"now": False}

    def on_event(ev):
        if isinstance(ev, ProgressEvent) and ev.done >= 16:
            stop["now"] = True

    result = drive(run_job(demo, job, lambda: stop["now"]), on_event)
    assert result.cancelled and result.computed == 80 - kept and result.images == 16 + kept + 16
    rest, _ = run_pass(demo, root, [LOGITS], batch=16)
    assert rest.computed == 96 - 16 - kept - 16 and rest.images == 96


# -- what real folders hold --------------------------------------------------------------------------
def _exif_rotated(path: Path) -> None:
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red, right half blue
    a[:, 20:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    im.save(path, exif=exif.tobytes(), quality=95)


def test_image_modes_decode_as_shown(tmp_path) -> None:
    g16 = np.full((8, 8), 1000, np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    img, _ = load_image(tmp_path / "g16.png")
    assert np.asarray(img)[0, 0, 0] == round(1000 / 65535 * 255)  # scaled, not clipped to white
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")[0])[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (8, 8))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png")
    assert np.asarray(load_image(tmp_path / "pal.png")[0])[1, 1].tolist() == [10, 200, 30]
    Image.fromarray(np.full((8, 8), 77, np.uint8), "L").save(tmp_path / "gray.jpg")
    assert abs(int(np.asarray(load_image(tmp_path / "gray.jpg")[0])[4, 4, 1]) - 77) <= 2
    _exif_rotated(tmp_path / "rot.jpg")
    img, size = load_image(tmp_path / "rot.jpg")
    assert size == (20, 40) and img.size == (20, 40)
    a = np.asarray(img)
    assert a[2, 10, 0] > 200 and a[-3, 10, 2] > 200  # red on top after the rotation
    px, geo = fit_image(tmp_path / "rot.jpg", 16, 16)
    assert px.shape == (16, 16, 3) and geo.src_w == 20 and geo.src_h == 40
    assert geo.to_source((0, 0, 16, 16)) == pytest.approx((0.0, 10.0, 20.0, 30.0))


@pytest.mark.parametrize(("w", "h", "out"), [(384, 191, 224), (150, 97, 224), (301, 199, 64)])
def test_odd_sizes_fit_without_a_rounding_error(tmp_path, w, h, out) -> None:
    """An image whose centre crop starts at 0 up to rounding (scikit-image's 384x191 page.png at
    224 px) once raised Pillow's "box offset can't be negative" out of the pass."""
    ramp = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1)).astype(np.uint8)
    Image.fromarray(ramp, "L").save(tmp_path / "odd.png")
    px, geo = fit_image(tmp_path / "odd.png", out, out)
    assert px.shape == (out, out, 3) and (geo.src_w, geo.src_h) == (w, h)
    centre = ramp[:, (w - h) // 2 : (w + h) // 2]  # the square the crop keeps, as grey levels
    assert abs(float(px.mean()) - float(centre.mean())) < 3


def test_bad_files_are_skipped_counted_and_listed(demo, tmp_path, monkeypatch) -> None:
    root = tmp_path / "mixed"
    x, _ = generate(5, 64, seed=2)
    for i in range(4):
        save_png(root / f"ok{i}.png", x[i])
    buf = io.BytesIO()
    Image.fromarray((x[4].transpose(1, 2, 0) * 255).astype(np.uint8)).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "fake.png").write_bytes(b"this is text, not a PNG")
    (root / "notes.txt").write_text("labels")
    (root / "sub").mkdir()
    Image.new("RGB", (300, 300)).save(root / "sub" / "huge.png")
    (root / ".hidden.png").write_bytes(b"")
    monkeypatch.setattr(folder_mod, "MAX_PIXELS", 200 * 200)
    result, events = run_pass(demo, root, [LOGITS])
    assert result.images == 4
    reasons = dict(result.skipped)
    assert reasons == {
        "fake.png": "not an image Pillow can read",
        "notes.txt": "not an image file",
        "sub/huge.png": "decompression bomb (300x300 px, over the 0 MP limit)",
        "truncated.jpg": "truncated image data",
        "zero.png": "empty file",
    }
    notes = [e.message for e in events if isinstance(e, NoticeEvent)]
    assert notes and "4 images, 5 skipped: fake.png (not an image Pillow can read)" in notes[-1]
    again, _ = run_pass(demo, root, [LOGITS])  # known-bad files are remembered, not retried
    assert again.computed == 0 and dict(again.skipped) == reasons


def test_empty_or_missing_folder_is_one_sentence(demo, tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"holds no images \(1 other files\)\.$"):
        run_pass(demo, tmp_path / "docs", [LOGITS])
    with pytest.raises(DatasetError, match="does not exist"):
        run_pass(demo, tmp_path / "nope", [LOGITS])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "fake.png").write_text("text")
    with pytest.raises(DatasetError) as e:
        run_pass(demo, tmp_path / "bad", [LOGITS])
    assert str(e.value).endswith("can be read (fake.png (not an image Pillow can read)).")


# -- clusters ------------------------------------------------------------------------------------------
def test_kmeans_finds_separated_groups_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    dirs = np.eye(3)[[0, 1, 2]] * 5
    x = np.concatenate([d + rng.normal(0, 0.3, (10, 3)) for d in dirs])
    c, lab = kmeans(x, 3, seed=1)
    assert sorted(np.bincount(lab).tolist()) == [10, 10, 10]
    for g in range(3):
        assert len(set(lab[g * 10 : (g + 1) * 10])) == 1
    c2, lab2 = kmeans(x, 3, seed=1)
    assert np.array_equal(c, c2) and np.array_equal(lab, lab2)
    assert kmeans(np.ones((4, 2)), 3)[0].shape == (1, 2)  # never an empty cluster


@pytest.mark.parametrize("opset", [9, 11, 13, 18])
def test_in_graph_rows_equal_numpy_with_ties(opset: int) -> None:
    """The onnxruntime engine's reductions (TopK from opset 10, Reduce/Arg before) give the
    rows numpy gives, first index on ties included, at every opset's node signatures."""
    import onnxruntime as ort
    from onnx import helper

    from fvdesk.core.dataset.cache import row_dtype
    from fvdesk.core.dataset.engine import _FIELDS, Measure, _append_reductions, reduce_numpy

    x, y = B.tensor("x", [None, 3, 4, 5]), B.tensor("y", [None, 3, 4, 5])
    proto = B.onnx_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], opset=opset, ir=7)
    names = _append_reductions(proto, "y", nhwc=False)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(opset).integers(-2, 3, (6, 3, 4, 5)).astype(np.float32)
    got = dict(zip(names, sess.run(names, {"x": a}), strict=True))
    want = reduce_numpy(np.maximum(a, 0), Measure(), row_dtype(3, 20))
    for field, name in zip(_FIELDS, names, strict=True):
        np.testing.assert_array_equal(got[name], want[field], err_msg=field)


@pytest.mark.parametrize("nhwc", [False, True])
def test_engine_inputs_are_the_affine_preprocessing_to_the_bit(nhwc) -> None:
    """The fast path (uint8 moved to the layout first) gives the bits of NHWC float arithmetic."""
    from fvdesk.core.dataset.engine import Engine

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    scale = np.array([1 / 58.395, 1 / 57.12, 1 / 57.375]) / 255.0 * 255.0
    shift = np.array([-2.118, -2.036, -1.804])
    e = Engine.__new__(Engine)
    e.affine, e.nhwc = (np.diag(scale), shift), nhwc
    want = images * scale.astype(np.float32) + shift.astype(np.float32)
    want = want if nhwc else want.transpose(0, 3, 1, 2)
    got = e.inputs(images)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape and np.array_equal(got, want)


def test_example_crops_decode_only_the_pixels_they_show(tmp_path, monkeypatch) -> None:
    """A large JPEG's crop and thumbnail come from a reduced-scale decode, like the full one."""
    from PIL import Image

    from fvdesk.core.dataset import examples as ex_mod
    from fvdesk.core.imagefolder import load_image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(small).resize((1600, 1200), Image.Resampling.BICUBIC).save(
        tmp_path / "a.jpg", quality=92
    )
    ex = ex_mod.Example(
        "a.jpg", 1.0, (0, 0), (0, 0, 8, 8), (400.0, 300.0, 1300.0, 1200.0), (1600, 1200)
    )
    assert ex_mod._draft_size(ex, 256, 128) == (192, 192)  # the 256 px thumbnail of 1600 px: 0.16
    asked: list = []

    def spy(path, *, draft=None):
        asked.append(draft)
        return load_image(path, draft=draft)

    monkeypatch.setattr(ex_mod, "load_image", spy)
    got = ex_mod.example_images(tmp_path, ex)
    monkeypatch.setattr(ex_mod, "_draft_size", lambda *a: None)
    full = ex_mod.example_images(tmp_path, ex)
    assert asked == [(192, 192), None]
    assert got.crop.shape == full.crop.shape == (128, 128, 3) and got.full.shape == full.full.shape
    assert got.box == pytest.approx(full.box)
    assert np.abs(got.crop.astype(int) - full.crop.astype(int)).mean() < 3
    # unknown source size: every pixel
    assert (
        ex_mod._draft_size(
            ex_mod.Example("a.jpg", 1.0, (0, 0), ex.box, ex.source_box, (0, 0)), 256, 128
        )
        is None
    )


def test_examples_of_one_photo_share_its_decode(tmp_path, monkeypatch) -> None:
    """A photo in many units' examples is decoded once per export, not once per example."""
    from PIL import Image

    from fvdesk.core.dataset import examples as ex_mod
    from fvdesk.core.imagefolder import load_image
    from fvdesk.core.output.examples import Crops

    Image.new("RGB", (800, 600), (90, 140, 200)).save(tmp_path / "p.jpg")
    calls: list[str] = []

    def counting(path, *, draft=None):
        calls.append(str(path))
        return load_image(path, draft=draft)

    monkeypatch.setattr(ex_mod, "load_image", counting)
    crops = Crops(images=2)
    boxes = [(0.0, 0.0, 300.0, 300.0), (400.0, 200.0, 700.0, 500.0), (100.0, 100.0, 400.0, 400.0)]
    got = [
        crops.get(tmp_path, ex_mod.Example("p.jpg", 1.0, (0, 0), (0, 0, 8, 8), b, (800, 600)))
        for b in boxes
    ]
    assert all(g is not None and g.crop.shape[0] >= 64 for g in got)
    assert len(calls) == 1
    assert (
        crops.get(
            tmp_path, ex_mod.Example("gone.jpg", 1.0, (0, 0), (0, 0, 8, 8), boxes[0], (800, 600))
        )
        is None
    )
