"""The app's controllers over the core: one job model from a click to a gallery, the model
session as the only owner of the model, and the defects of issue 8 (quitting during a save, the
labels "×" button, the status bar's parity and preprocessing origin).

Budget: the demo model once for the module (the CLI loads it again for its two comparisons),
renders of a few steps on a 32 px canvas.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PIL import Image  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from fvdesk.gui.canvas.tiles import DONE, Tile  # noqa: E402
from tests.gui.support import CONV1, LOGITS, RENDER_TIMEOUT, fast_settings, wait_idle  # noqa: E402


@pytest.fixture(autouse=True)
def _private_settings(isolated):
    return isolated


def png_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def save(qtbot, w, folder) -> list:
    """Save the finished tiles as a gallery and read it back: [(item, pixels)]."""
    from fvdesk.core.output.gallery import read_gallery

    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.galleries.save_gallery(folder)
    return read_gallery(folder)[1]


# ------------------------------------------------------------------------------------------------
# one job model: the app and the CLI render the same pixels; --from reproduces app galleries
# ------------------------------------------------------------------------------------------------
def test_a_combination_renders_the_same_pixels_in_the_app_and_the_cli(
    qtbot, demo_window, demo_model_path, tmp_path
):
    from fvdesk.cli import main

    w = demo_window
    fast_settings(w, seed=3)
    w.article.add_units([(CONV1, 1)])
    w.article.add_units([(CONV1, 4)], -0.5)
    task = w.article.render_combination()
    wait_idle(qtbot, w)
    (tile,) = w.tiles.tiles()
    assert tile.state == DONE and tile.kind == "combination"
    ((app_item, app_pixels),) = save(qtbot, w, tmp_path / "app")

    expr = f"{CONV1}:1 - 0.5*{CONV1}:4"
    cli_out = tmp_path / "cli"
    args = ["render", str(demo_model_path), "--objective", expr, "--steps", "6", "--size", "32",
            "--seed", "3", "--device", "cpu", "--out", str(cli_out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    cli_items = json.loads((cli_out / "gallery.json").read_text(encoding="utf-8"))["items"]
    (cli_item,) = cli_items
    # the same job and the same settings (what only paces previews aside) ...
    assert app_item.provenance["job"] == cli_item["provenance"]["job"]
    assert app_item.provenance["job"] == task.job.spec.to_dict()
    drop = {"preview_every"}
    app_settings = {k: v for k, v in app_item.provenance["settings"].items() if k not in drop}
    cli_settings = {k: v for k, v in cli_item["provenance"]["settings"].items() if k not in drop}
    assert app_settings == cli_settings
    # ... give the same pixels, bit for bit
    cli_pixels = png_pixels(cli_out / cli_item["file"])
    assert app_pixels.shape == (32, 32, 3) and app_pixels.std() > 5
    assert np.array_equal(app_pixels, cli_pixels)


def test_render_from_reproduces_an_app_saved_item(qtbot, demo_window, tmp_path, capsys):
    from fvdesk.cli import main

    w = demo_window
    w.jobs.render_units(LOGITS, [0, 5, 6])  # one batch: the items share it
    wait_idle(qtbot, w)
    pairs = save(qtbot, w, tmp_path / "g")
    n = next(i for i, (item, _) in enumerate(pairs) if item.unit == 5)
    assert pairs[n][0].provenance["batch"] == [0, 1, 2]
    capsys.readouterr()
    assert main(["render", "--from", str(tmp_path / "g" / "gallery.json"), "--item", str(n)]) == 0
    out = capsys.readouterr().out
    assert f"item {n} " in out and "identical to the saved image" in out, out


def test_events_reach_tiles_by_their_own_slots(qtbot, demo_window):
    """Facets coupled by diversity never split across batches, so with batch 3 a unit's two
    facets go alone: tiles must follow the events' slots, not a position in the batch."""
    w = demo_window
    fast_settings(w, batch=3)
    seen: list[tuple[int, ...]] = []
    w.queue.job_event.connect(lambda _t, ev: seen.append(getattr(ev, "slots", None) or ()))
    task = w.jobs.render_units(CONV1, [2, 7, 11], facets=2)
    tiles = w.tiles.tiles()
    assert [(t.unit, t.facet, t.slot) for t in tiles] == [
        (u, f, 2 * i + f) for i, u in enumerate([2, 7, 11]) for f in range(2)
    ]
    wait_idle(qtbot, w)
    assert {(0, 1), (2, 3), (4, 5)} <= set(seen)  # three batches of one unit's facets
    for t in tiles:
        assert t.state == DONE and t.job_id == task.id
        r = t.result
        assert (r.slot, r.unit, r.facet) == (t.slot, t.unit, t.facet)
        assert t.array is r.image
    assert not np.array_equal(tiles[0].array, tiles[1].array)  # facets differ


def test_a_new_job_kind_gets_its_tiles_on_a_row_of_their_own(qtbot, demo_window):
    from fvdesk.core.jobs.job import JobSpec, Slot
    from fvdesk.core.jobs.run import register_runner
    from fvdesk.core.optim.events import JobResult
    from fvdesk.gui.runtime.jobs import register_tiles

    @dataclass(frozen=True)
    class StripJob(JobSpec):  # a kind the app does not know, as later issues add: a strip
        type: ClassVar[str] = "test-strip"
        layer: str = CONV1

        def slots(self):
            return [Slot(i, 0, i, (i,), 0) for i in range(3)]

        @property
        def layers(self):
            return (self.layer,)

        @property
        def title(self):
            return "strip"

    def runner(model, job, cancelled, only, device):
        yield from ()
        return JobResult([], False, 0.0, "cpu")

    register_runner(StripJob, runner)
    register_tiles(StripJob, lambda spec, slot, _lab: {"layer": spec.layer, "unit": 0,
                   "kind": "strip", "caption": f"step {slot.index}", "strip": True})  # fmt: skip
    w = demo_window
    w.resize(1600, 800)
    w.jobs.render_units(CONV1, [0])
    task = w.jobs.submit(StripJob())
    w.jobs.render_units(CONV1, [1])
    tiles = w.tiles.tiles()
    assert [t.row for t in tiles] == [0, task.id, task.id, task.id, 0]
    assert [t.caption for t in tiles[1:4]] == ["step 0", "step 1", "step 2"]
    # wide enough for all five on one line, yet the strip has a line of its own
    assert w.tile_view.lines() == [[0], [1, 2, 3], [4]]
    wait_idle(qtbot, w)


def test_the_tile_view_wraps_and_selects_like_a_grid(qtbot, window):
    w = window
    w.tiles.add([Tile(layer="L", unit=i, kind="channel", caption=f"L:{i}") for i in range(7)])
    view = w.tile_view
    w.canvas.size_slider.setValue(60)
    view.resize(3 * (view._item_size().width() + view.SPACING) + 30, 400)
    qtbot.waitUntil(lambda: len(view.lines()[0]) == 3, timeout=5000)
    assert view.lines() == [[0, 1, 2], [3, 4, 5], [6]]
    rect = view.visualRect(w.tiles.index(4, 0))
    assert view.indexAt(rect.center()).row() == 4
    view.setCurrentIndex(w.tiles.index(1, 0))
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.currentIndex().row() == 4
    view.selectAll()
    assert len(view.selected_tiles()) == 7


# ------------------------------------------------------------------------------------------------
# the model session owns the model: the GUI thread never runs model work
# ------------------------------------------------------------------------------------------------
def test_the_gui_thread_never_runs_model_work(
    qtbot, demo_window, demo_model, tmp_path, monkeypatch
):
    import torch

    from fvdesk.core.model.loaded import LoadedModel
    from fvdesk.gui.runtime import session as qt_session

    calls: list[tuple[str, bool]] = []

    def spy(cls, name):
        real = getattr(cls, name)

        def wrapper(*args, **kwargs):
            calls.append((name, threading.current_thread() is threading.main_thread()))
            return real(*args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    spy(LoadedModel, "extractor")
    spy(LoadedModel, "to")
    spy(torch.nn.Module, "to")
    spy(torch.Tensor, "requires_grad_")
    monkeypatch.setattr(qt_session, "is_embedded", lambda path: True)  # no sidecar writes
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(8)) + "\n")
    w = demo_window
    original = demo_model.preprocessing, demo_model.labels, demo_model.labels_source
    try:
        w.session.set_model(demo_model)  # where the model lives is probed off the GUI thread
        qtbot.waitUntil(lambda: bool(w.session.device_text), timeout=30_000)
        w.session.choose_preprocessing("unit")
        w.session.choose_labels_file(str(labels))
        w.jobs.render_units(LOGITS, [1, 2])
        w.session.choose_preprocessing("imagenet")  # while the job may run: it keeps "unit"
        w.session.revert_labels()
        w.jobs.render_deepdream(CONV1)
        wait_idle(qtbot, w)
        save(qtbot, w, tmp_path / "g")
    finally:
        demo_model.preprocessing, demo_model.labels, demo_model.labels_source = original
    assert {name for name, _ in calls} >= {"extractor", "requires_grad_"}
    assert not [name for name, on_gui in calls if on_gui], calls
    first, _, dream = w.tiles.tiles()
    assert first.result.provenance["preprocessing"]["preset"] == "unit"
    assert first.label == "c1"  # the labels it was submitted with
    assert dream.result.provenance["preprocessing"]["preset"] == "imagenet"
    assert demo_model.preprocessing == original[0]  # the session's choice, not the model's


# ------------------------------------------------------------------------------------------------
# defects
# ------------------------------------------------------------------------------------------------
def test_quitting_during_a_gallery_save_waits_for_it(qtbot, demo_window, tmp_path, monkeypatch):
    from fvdesk.core.output import gallery as gal

    w = demo_window
    w.jobs.render_units(CONV1, [0, 1])
    wait_idle(qtbot, w)
    gate = threading.Event()
    real = gal.write_gallery

    def slow_write(*args, **kwargs):
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(gal, "write_gallery", slow_write)
    folder = tmp_path / "g"
    w.galleries.save_gallery(folder)
    w.close()
    # the window stays, says why, and nothing was shut down under the writer
    assert w.isVisible() and w.galleries.is_saving()
    assert "Saving the gallery" in w.statusBar().currentMessage()
    assert w.queue.thread_running()
    gate.set()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=60_000)
    assert not w.queue.thread_running()
    manifest = json.loads((folder / "gallery.json").read_text(encoding="utf-8"))
    assert len(manifest["items"]) == 2 and (folder / "index.html").is_file()


def test_leaving_the_app_waits_for_writes_but_not_for_model_loads(qtbot, tmp_path):
    from fvdesk.gui.app import finish
    from fvdesk.gui.runtime.worker import BackgroundCall

    out = tmp_path / "written"
    loading = threading.Event()

    def write(_progress):
        time.sleep(0.3)
        out.write_text("all of it")

    BackgroundCall(write, name="write", abandonable=False).start()
    load = BackgroundCall(lambda _p: loading.wait(30), name="load").start()  # cannot be stopped
    left: list[tuple[int, bool]] = []
    try:
        assert finish(3, leave=lambda rc: left.append((rc, out.is_file()))) == 3
    finally:
        loading.set()
    assert left == [(3, True)]  # the write was complete before leaving without the load
    load.join(5)


def test_the_labels_x_button_restores_the_models_labels_and_the_sidecar(
    qtbot, demo_window, demo_model, demo_model_path, tmp_path, monkeypatch
):
    from fvdesk.core.model.sidecar import sidecar_path

    w = demo_window
    copy = tmp_path / "demo.onnx"
    shutil.copyfile(demo_model_path, copy)
    monkeypatch.setattr(demo_model, "path", copy)  # a model the user owns: sidecars allowed
    original = list(demo_model.labels), demo_model.labels_source
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(8)) + "\n")
    try:
        w.session.set_model(demo_model)
        w.session.choose_labels_file(str(labels))
        side = json.loads(sidecar_path(copy).read_text(encoding="utf-8"))
        assert side["labels"] == "classes.txt" and w.session.labels[5] == "class 5"
        assert demo_model.labels == original[0]  # the session's choice, never the model's
        logits = w.layers.tree_model.index_of_unit(LOGITS, 5)
        assert logits.data() == "5: class 5"
        w.settings_panel.labels_clear.click()
        assert w.session.labels == original[0] and w.session.choices.labels_source == "metadata"
        assert "labels" not in json.loads(sidecar_path(copy).read_text(encoding="utf-8"))
        assert w.session.labels_file == "" and logits.data() == "5: dots"
        assert "class" not in w.settings_panel.labels_edit.text()
        w.jobs.render_units(LOGITS, [5])
        assert w.tiles.tiles()[-1].label == "dots"
        wait_idle(qtbot, w)
    finally:
        demo_model.labels, demo_model.labels_source = original


def test_builtin_labels_are_the_metadatas_or_the_imagenet_list():
    from fvdesk.core.model.labels import builtin_labels

    assert builtin_labels({"classes": '["a", "b"]'}, 2) == (["a", "b"], "metadata")
    labels, source = builtin_labels({}, 1000)
    assert source == "imagenet" and len(labels) == 1000
    assert builtin_labels({}, 8) == (None, "none")


def test_status_bar_shows_relative_parity_and_where_preprocessing_came_from(
    qtbot, window, demo_model, monkeypatch
):
    from fvdesk.core.model.loaded import Parity

    w = window
    huge = Parity(max_abs_diff=7.1e14, rel_diff=2.3e-7, feature_rel_diff=None,
                  feature_layer=None, tolerance=1e-3, ok=True)  # fmt: skip
    monkeypatch.setattr(demo_model, "parity", huge)
    w.session.set_model(demo_model)
    parity = w.status.parity_label.text()
    assert "2.3e-07" in parity and "relative" in parity and "e+14" not in parity
    assert "above" not in parity
    pre = w.status.preprocessing_label
    assert pre.text().endswith("(metadata)") and "model metadata" in pre.toolTip()
    w.session.choose_preprocessing("unit")
    assert pre.text() == "input: unit (user)" and "your choice" in pre.toolTip()
    for source, words in (("sidecar", "saved choice"), ("default", "does not say")):
        monkeypatch.setattr(demo_model, "preprocessing", replace(demo_model.preprocessing,
                                                                 source=source))  # fmt: skip
        w.session.set_model(demo_model)
        assert pre.text().endswith(f"({source})") and words in pre.toolTip()


# ------------------------------------------------------------------------------------------------
# atlas from the app: progress, cancel, resume
# ------------------------------------------------------------------------------------------------
def test_atlas_of_selected_layers_cancels_and_resumes(qtbot, demo_window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from fvdesk.core.output.atlas import UnitCommitted
    from fvdesk.core.output.gallery import read_gallery

    w = demo_window
    fast_settings(w, batch=4)
    folder = tmp_path / "atlas"
    folder.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    w.layers.select(CONV1)
    progress: list[float] = []
    w.galleries.progress.connect(lambda f, _text: progress.append(f))

    # Cancel as the first batch is committed (on the render thread, so no batch can slip by).
    def stop_after_first_batch(task, ev):
        if isinstance(ev, UnitCommitted):
            task.cancel.set()

    w.queue._worker.event.connect(stop_after_first_batch, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(w.galleries.atlas_finished, timeout=RENDER_TIMEOUT):
        w.actions_by_key["atlas"].trigger()
    w.queue._worker.event.disconnect(stop_after_first_batch)
    (layer_dir,) = [p for p in folder.iterdir() if p.is_dir()]
    assert len(read_gallery(layer_dir)[1]) == 4  # the first batch, kept; the cancelled one not
    assert "choose" in w.log_view.toPlainText() and 0 < progress[-1] < 1

    with qtbot.waitSignal(w.galleries.atlas_finished, timeout=RENDER_TIMEOUT):
        w.actions_by_key["atlas"].trigger()  # the same folder again: resume
    pairs = read_gallery(layer_dir)[1]
    assert sorted(it.unit for it, _ in pairs) == list(range(16))
    assert "resuming, 4 of 16" in w.log_view.toPlainText() and progress[-1] == 1
    assert (folder / "index.html").is_file() and (folder / "atlas.json").is_file()
