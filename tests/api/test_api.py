"""The public Python API: the jobs it builds are the CLI's, results show themselves, errors are
one sentence (``fvdesk`` as scripts and notebooks use it)."""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path

import numpy as np
import pytest

import fvdesk
from fvdesk.core.errors import DatasetError, FvdeskError

DEEP = "/features/block4/relu/Relu"
LOGITS = "/classifier/Gemm"
FAST = ["--steps", "4", "--size", "32", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def model() -> fvdesk.Model:
    return fvdesk.load_model(device="cpu")


def _cli(*argv: str) -> None:
    from fvdesk.cli import main

    assert main(list(argv)) == 0, argv


def _same_gallery(a: Path, b: Path) -> None:
    """Two galleries hold the same images: captions, provenance and pixels."""
    ga, gb = fvdesk.open_gallery(a), fvdesk.open_gallery(b)
    assert len(ga) == len(gb) > 0
    for x, y in zip(ga, gb, strict=True):
        assert x.caption == y.caption and x.label == y.label
        assert x.provenance == y.provenance
        assert np.array_equal(x.image, y.image), x.caption


# ------------------------------------------------------------------------------------------------
# Objectives (torch-free)
# ------------------------------------------------------------------------------------------------
def test_objectives_compose_and_caption_as_the_core_does() -> None:
    a, b = fvdesk.unit("L", 3), fvdesk.objective("L:7 + 2*M:1")
    assert str(a + 0.5 * b) == "L:3 + 0.5·L:7 + M:1"
    assert str(a - b / 2) == "L:3 − 0.5·L:7 − M:1"
    assert str(-a) == "−L:3"
    assert sum([a, b]) == a + b
    assert str(fvdesk.unit("L", 2, x=1, y=0)) == "L:2@1,0"
    assert str(fvdesk.unit("L", 2, kind="prob")) == "prob(L:2)"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: fvdesk.objective("L:3 +"), "Cannot read"),
        (lambda: fvdesk.objective(""), "empty"),
        (lambda: fvdesk.objective(3), "not 3"),
        (lambda: fvdesk.unit("L", -1), "whole number"),
        (lambda: fvdesk.unit("L", 1, kind="maximal"), "Unknown objective kind"),
        (lambda: fvdesk.unit("L", 1) * math.inf, "finite"),
        (lambda: fvdesk.unit("L", 1) / 0, "divided by zero"),
    ],
)
def test_bad_objectives_are_one_sentence(make, words: str) -> None:
    with pytest.raises(fvdesk.ConfigError, match=words) as err:
        make()
    _one_sentence(err.value)


def test_bare_units_take_their_layers_kind(model: fvdesk.Model) -> None:
    terms = (fvdesk.objective(f"{LOGITS}:2 + {DEEP}:3") + fvdesk.unit(DEEP, 1, x=2, y=3)).terms(
        model
    )
    assert [t.kind for t in terms] == ["logit", "channel", "neuron"]
    assert (terms[2].x, terms[2].y) == (2, 3)


# ------------------------------------------------------------------------------------------------
# The same jobs as the command line
# ------------------------------------------------------------------------------------------------
def test_a_combination_is_the_cli_combination(model: fvdesk.Model, tmp_path: Path) -> None:
    expr = f"{DEEP}:3 + 0.5*{DEEP}:11"
    _cli("render", "--objective", expr, "--out", str(tmp_path / "cli"), *FAST)
    renders = fvdesk.render(model, expr, steps=4, size=32, out=tmp_path / "api")
    _same_gallery(tmp_path / "cli", tmp_path / "api")
    assert renders.folder == tmp_path / "api" and renders.job.spec.type == "combination"
    same = fvdesk.render(
        model, fvdesk.unit(DEEP, 3) + 0.5 * fvdesk.unit(DEEP, 11), steps=4, size=32
    )
    assert same.job.provenance_key() == renders.job.provenance_key()
    assert np.array_equal(same[0].image, renders[0].image)


def test_units_are_the_cli_units_and_save_as_out_writes(
    model: fvdesk.Model, tmp_path: Path
) -> None:
    _cli("render", "--layer", LOGITS, "--units", "1,2", "--objective", "logit", "--seed", "3",
         "--out", str(tmp_path / "cli"), *FAST)  # fmt: skip
    renders = fvdesk.render_units(model, LOGITS, [1, 2], steps=4, size=32, seed=3)
    assert renders.captions == [f"{LOGITS}:1", f"{LOGITS}:2"]  # the class name is its label
    saved = renders.save(tmp_path / "api")
    _same_gallery(tmp_path / "cli", tmp_path / "api")
    assert saved.captions == renders.captions and saved.index_html.is_file()


def test_settings_are_the_flags_on_top_of_the_given_settings(model: fvdesk.Model) -> None:
    base = fvdesk.RenderSettings(steps=5, seed=9)
    r = fvdesk.render_units(model, DEEP, 0, settings=base, size=32, no_transforms=True, lr=0.05)
    s = r.settings
    assert (s.steps, s.seed, s.size, s.lr, s.transforms) == (5, 9, 32, 0.05, None)
    assert base.transforms is not None  # the caller's settings are left alone
    assert r[0].provenance["settings"]["steps"] == 5


def test_a_job_spec_renders_as_it_is(model: fvdesk.Model) -> None:
    from fvdesk.core.jobs.job import DirectionJob

    r = fvdesk.render(model, DirectionJob(DEEP, seeds=(0, 1)), steps=2, size=32)
    assert len(r) == 2 and r.job.spec.type == "direction"
    with pytest.raises(fvdesk.ConfigError, match="own facets"):
        fvdesk.render(model, DirectionJob(DEEP, seeds=(0,)), facets=2)


def test_events_reach_the_caller_and_cancel_stops(model: fvdesk.Model) -> None:
    from fvdesk.core.optim.events import StepEvent, UnitDoneEvent

    seen: list[object] = []
    stop = threading.Event()

    def on_event(ev: object) -> None:
        seen.append(ev)
        if isinstance(ev, StepEvent) and ev.step >= 2:
            stop.set()

    r = fvdesk.render_units(model, DEEP, 4, steps=50, size=32, on_event=on_event, cancel=stop)
    assert r.cancelled and any(isinstance(e, UnitDoneEvent) for e in seen)
    assert max(e.step for e in seen if isinstance(e, StepEvent)) < 50


# ------------------------------------------------------------------------------------------------
# Display
# ------------------------------------------------------------------------------------------------
def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_results_galleries_and_models_show_themselves(model: fvdesk.Model, tmp_path: Path) -> None:
    r = fvdesk.render_units(model, LOGITS, [0, 5], steps=2, size=32)
    w, h = _png_size(r._repr_png_())
    assert w > 64 and h > 64  # a contact sheet, not one 32 px image
    html = r._repr_html_()
    assert html.count("<img") == 2 and all(c in html for c in r.captions)
    assert _png_size(r[1]._repr_png_()) and r.captions[1] in r[1]._repr_html_()
    assert _png_size(r[1].png()) == (32, 32)
    g = r.save(tmp_path / "g")
    assert g._repr_png_() == fvdesk.open_gallery(tmp_path / "g" / "gallery.json")._repr_png_()
    assert all(c in g._repr_html_() for c in r.captions)
    assert DEEP in model._repr_html_() and "(logits)" in model._repr_html_()
    assert "demo.onnx" in repr(model) and "2 image(s)" in repr(r)


# ------------------------------------------------------------------------------------------------
# Dataset examples
# ------------------------------------------------------------------------------------------------
def test_examples_match_the_cli_gallery(
    model: fvdesk.Model, tmp_path: Path, examples_cache
) -> None:
    from tests.images import pattern_folder

    images = pattern_folder(tmp_path / "images", per_class=2, size=48)
    ex = fvdesk.examples(model, images, DEEP, top=3, bottom=2)
    assert ex.count == 16 and ex.layers == [DEEP]
    top = [e.value for e in ex.unit(5).top]
    assert len(top) == 3 and top == sorted(top, reverse=True)
    api = ex.save(tmp_path / "api", units=[5, 6])
    _cli("examples", "--images", str(images), "--layer", DEEP, "--units", "5,6", "--top", "3",
         "--bottom", "2", "--out", str(tmp_path / "cli"), "--quiet", "--device", "cpu")  # fmt: skip
    cli = fvdesk.open_gallery(tmp_path / "cli")
    assert api.captions == cli.captions == [f"{DEEP}:5 examples", f"{DEEP}:6 examples"]
    for a, b in zip(api, cli, strict=True):
        assert a.item.examples["top"] == b.item.examples["top"]
    assert f"{DEEP}:5" in ex._repr_html_()
    with pytest.raises(fvdesk.ConfigError, match="not of"):
        ex.unit(0, layer=LOGITS)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def _one_sentence(err: BaseException) -> None:
    text = str(err)
    assert isinstance(err, FvdeskError)
    assert "\n" not in text and text[-1] in ".?" and "Traceback" not in text, text


@pytest.mark.parametrize(
    "call, kind, words",
    [
        (lambda m, d: fvdesk.load_model(d / "missing.onnx"), fvdesk.ModelLoadError, "does not exist"),
        (lambda m, d: fvdesk.load_model(preprocessing="sepia"), fvdesk.ConfigError, "unknown preprocessing preset"),
        (lambda m, d: fvdesk.load_model(labels=d / "none.txt"), fvdesk.ConfigError, "labels file"),
        (lambda m, d: fvdesk.load_model(input_size=(3, 5000)), fvdesk.ConfigError, "not a size"),
        (lambda m, d: fvdesk.load_model(device="tpu9"), fvdesk.FvdeskError, "not a device"),
        (lambda m, d: fvdesk.render(m, "/features/nope:3"), fvdesk.RenderError, "no layer named '/features/nope'"),
        (lambda m, d: fvdesk.render(m, f"{DEEP}:3 + "), fvdesk.ConfigError, "Cannot read"),
        (lambda m, d: fvdesk.render_units(m, "/features/block4/relu/Rel", 1), fvdesk.RenderError, "did you mean"),
        (lambda m, d: fvdesk.render_units(m, DEEP, 96), fvdesk.RenderError, "0-95"),
        (lambda m, d: fvdesk.render_units(m, DEEP, 1, stepz=2), fvdesk.ConfigError, "did you mean 'steps'"),
        (lambda m, d: fvdesk.render_units(m, DEEP, 1, steps="many"), fvdesk.ConfigError, "steps"),
        (lambda m, d: fvdesk.examples(m, d / "no-images", DEEP), DatasetError, "does not exist"),
        (lambda m, d: fvdesk.open_gallery(d), fvdesk.GalleryError, "not an fvdesk gallery"),
        (lambda m, d: fvdesk.save_gallery(d / "g", []), fvdesk.GalleryError, "nothing to save"),
    ],
)  # fmt: skip
def test_bad_input_is_one_sentence(
    model: fvdesk.Model, tmp_path: Path, call, kind, words: str
) -> None:
    (tmp_path / "stray.txt").write_text("not a gallery")
    with pytest.raises(kind, match=words) as err:
        call(model, tmp_path)
    _one_sentence(err.value)


def test_a_gallery_of_another_model_is_refused(model: fvdesk.Model, tmp_path: Path) -> None:
    from fvdesk.core.output.gallery import GalleryItem, ModelInfo, write_gallery

    write_gallery(tmp_path / "g", ModelInfo("other.onnx", "f" * 64),
                  [(GalleryItem("a", 1), np.zeros((8, 8, 3), np.uint8))])  # fmt: skip
    with pytest.raises(fvdesk.GalleryError, match="different model") as err:
        fvdesk.render_units(model, DEEP, 0, steps=2, size=32, out=tmp_path / "g")
    _one_sentence(err.value)
