"""The desktop app, driven as a user would (pytest-qt, offscreen).

Budget: the demo model is loaded once per module (plus once through File > Open), renders use a
few steps on a 32 px canvas.  Settings go to a temporary ini file (``FVDESK_SETTINGS``) and error
dialogs are recorded instead of shown, so nothing blocks and no developer settings are touched
(the fixtures are in conftest.py, the helpers in gui_support.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QModelIndex, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QFileDialog  # noqa: E402

from fvdesk.gui.canvas.tiles import CANCELLED, DONE, FAILED, RUNNING  # noqa: E402
from tests.gui.support import (  # noqa: E402
    CONV1,
    LOAD_TIMEOUT,
    LOGITS,
    RENDER_TIMEOUT,
    fast_settings,
    wait_idle,
)


@pytest.fixture(autouse=True)
def _private_settings(isolated):
    return isolated


def tree_rows(w, parent=None, depth=0):
    """(depth, name, op, shape, channels) of every row the proxy shows (fetching nothing)."""
    parent = parent or QModelIndex()
    out = []
    proxy = w.layers.tree_proxy
    for r in range(proxy.rowCount(parent)):
        idx = proxy.index(r, 0, parent)
        ref = w.layers.ref_at(idx)
        out.append((depth, ref, [proxy.index(r, c, parent).data() for c in range(4)]))
        if ref.kind == "group" or proxy.rowCount(idx):
            out.extend(tree_rows(w, idx, depth + 1))
    return out


def proxy_index_of_unit(w, layer: str, unit: int) -> QModelIndex:
    src = w.layers.tree_model.index_of_unit(layer, unit)
    idx = w.layers.tree_proxy.mapFromSource(src)
    parent = idx.parent()
    while parent.isValid():
        w.layers.tree.expand(parent)
        parent = parent.parent()
    w.layers.tree.scrollTo(idx)
    return idx


# ------------------------------------------------------------------------------------------------
def test_open_demo_through_file_menu(qtbot, window, monkeypatch, isolated):
    from fvdesk.core.resources import demo_model_path

    path = demo_model_path()
    calls = []

    def fake_open(*args, **kwargs):
        calls.append(args)
        return str(path), "ONNX models (*.onnx)"

    import fvdesk.core.model.loader as loader

    real_load = loader.load_model
    threads = []

    def load_model(*args, **kwargs):
        threads.append(threading.current_thread())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loader, "load_model", load_model)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", fake_open)
    file_menu = window.menus["&File"]
    action = next(a for a in file_menu.actions() if a.objectName() == "action_open")
    with qtbot.waitSignal(window.session.changed, timeout=LOAD_TIMEOUT):
        action.trigger()
        # the trigger returned before the model was loaded: the load runs off the GUI thread,
        # with its progress shown, while the event loop goes on
        assert window.session.is_loading() and window.model is None
        assert window.status.load_progress.isVisible()
        qtbot.wait(50)
    assert threads and threading.main_thread() not in threads
    assert calls and not isolated
    assert window.model is not None and window.model.path == path
    assert "demo.onnx" in window.windowTitle()
    assert not window.status.load_progress.isVisible()
    rows = tree_rows(window)
    layers = {ref.layer.name for _, ref, _ in rows if ref.kind == "layer"}
    assert layers == {layer.name for layer in window.model.graph}
    assert window.status.device_label.text().startswith("cpu")
    assert (
        window.status.parity_label.text().startswith("parity")
        and "above" not in window.status.parity_label.text()
    )
    assert window.prefs.recent_files()[0] == str(path.resolve())


def test_tree_columns_units_and_labels(qtbot, demo_window):
    w = demo_window
    rows = tree_rows(w)
    by_name = {ref.layer.name: cols for _, ref, cols in rows if ref.kind == "layer"}
    assert by_name[CONV1][1:] == ["Conv", "16×64×64", "16"]
    assert by_name[LOGITS][1:] == ["Gemm", "8", "8"]
    assert any(ref.kind == "group" for _, ref, _ in rows)  # the name tree, not a flat list
    # units are lazy: nothing fetched until a layer is expanded
    assert all(ref.kind != "unit" for _, ref, _ in rows)
    logits = w.layers.tree_proxy.mapFromSource(w.layers.tree_model.index_of_layer(LOGITS))
    w.layers.tree.expand(logits)
    assert w.layers.tree_proxy.rowCount(logits) == 8
    names = [w.layers.tree_proxy.index(r, 0, logits).data() for r in range(8)]
    assert names[0] == "0: horizontal stripes" and names[5] == "5: dots"
    conv = w.layers.tree_proxy.mapFromSource(w.layers.tree_model.index_of_layer(CONV1))
    w.layers.tree.expand(conv)
    assert w.layers.tree_proxy.rowCount(conv) == 16
    assert w.layers.tree_proxy.index(3, 0, conv).data() == "unit 3"


def test_filter_by_name_and_op_keeps_parents(qtbot, demo_window):
    w = demo_window
    total = len(tree_rows(w))
    w.layers.filter_edit.setText("relu")
    qtbot.waitUntil(lambda: w.layers.tree_proxy.needle() == "relu", timeout=2000)
    rows = tree_rows(w)
    layers = [ref.layer for _, ref, _ in rows if ref.kind == "layer"]
    assert len(layers) == 4 and all("relu" in x.name.lower() for x in layers)
    # parents of matches stay, so the tree keeps its shape
    assert {ref.node.label for _, ref, _ in rows if ref.kind == "group"} >= {"features", "block1"}
    assert w.layers.tree.isExpanded(w.layers.tree_proxy.index(0, 0))

    w.layers.filter_edit.setText("maxpool")  # by op type
    w.layers.apply_filter()
    layers = [ref.layer for _, ref, _ in tree_rows(w) if ref.kind == "layer"]
    assert len(layers) == 3 and all(x.op == "MaxPool" for x in layers)

    w.layers.filter_edit.setText("no such layer")
    w.layers.apply_filter()
    assert w.layers.tree_proxy.rowCount() == 0

    w.layers.filter_edit.clear()
    w.layers.apply_filter()
    assert len(tree_rows(w)) == total


def test_double_click_unit_renders_a_tile(qtbot, demo_window):
    w = demo_window
    events = []
    w.queue.job_event.connect(lambda job, ev: events.append(type(ev).__name__))
    idx = proxy_index_of_unit(w, CONV1, 2)
    qtbot.waitUntil(lambda: w.layers.tree.visualRect(idx).isValid(), timeout=2000)
    rect = w.layers.tree.visualRect(idx)
    with qtbot.waitSignal(w.layers.tree.doubleClicked, timeout=2000):
        qtbot.mouseClick(w.layers.tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(w.layers.tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert w.tiles.rowCount() == 1
    wait_idle(qtbot, w)
    tile = w.tiles.tiles()[0]
    assert tile.state == DONE, tile.message
    assert tile.layer == CONV1 and tile.unit == 2 and tile.caption.endswith(":2")
    assert tile.value is not None and np.isfinite(tile.value)
    assert tile.array.shape == (32, 32, 3) and tile.array.std() > 5  # not blank
    assert tile.image.width() == 32
    assert "PreviewEvent" in events and "StepEvent" in events  # live previews
    assert w.status.job_label.text() == "idle"
    dlg = w.zoom_tile(tile.id)  # full size, nearest-neighbour
    dlg.set_zoom(4)
    pm = dlg.current_pixmap()
    assert pm is not None and pm.width() == 128
    dlg.close()


def test_layer_renders_a_grid_and_logits_have_labels(qtbot, demo_window):
    w = demo_window
    w.jobs.render_layer(LOGITS, 3)
    w.jobs.render_units(CONV1, [1], facets=2)
    assert w.tiles.rowCount() == 5
    wait_idle(qtbot, w)
    tiles = w.tiles.tiles()
    assert [t.state for t in tiles] == [DONE] * 5
    assert [t.label for t in tiles[:3]] == [
        "horizontal stripes",
        "vertical stripes",
        "diagonal stripes /",
    ]
    assert [t.kind for t in tiles[:3]] == ["logit"] * 3
    assert [(t.unit, t.facet) for t in tiles[3:]] == [(1, 0), (1, 1)]


def test_cancel_stops_the_running_render(qtbot, demo_window):
    w = demo_window
    fast_settings(w, steps=20000, preview_every=50)
    w.jobs.render_units(CONV1, [0])
    w.jobs.render_units(CONV1, [1])  # queued behind it: goes on after the cancel
    first, second = w.tiles.tiles()
    qtbot.waitUntil(lambda: first.state == RUNNING and first.step > 1, timeout=RENDER_TIMEOUT)
    fast_settings(w)
    w.actions_by_key["cancel"].trigger()
    qtbot.waitUntil(lambda: first.state == CANCELLED, timeout=RENDER_TIMEOUT)
    assert first.step < 20000  # stopped where it was, not run to its end
    assert first.status_text() == "cancelled" and "cancelled at step" in first.message
    # the queued job was not cancelled; cancel it too (Shift+Esc drops the queue)
    w.actions_by_key["cancel_all"].trigger()
    wait_idle(qtbot, w, timeout=10_000)
    assert second.state == CANCELLED


def test_failed_render_marks_its_tile_and_others_go_on(qtbot, demo_window):
    w = demo_window
    w.jobs.render_units(CONV1, [999])  # the layer has 16 channels
    w.jobs.render_units(CONV1, [3])
    wait_idle(qtbot, w)
    bad, good = w.tiles.tiles()
    assert bad.state == FAILED and "999" in bad.message
    assert good.state == DONE


def test_combination_renders_one_tile(qtbot, demo_window):
    w = demo_window
    w.layers.select(CONV1, 1)
    w.actions_by_key["add_combination"].trigger()
    w.article.add_units([(CONV1, 4)])
    assert w.combination_dock.isVisibleTo(w)
    assert w.article.builder.expression.text() == f"{CONV1}:1 + {CONV1}:4"
    assert w.actions_by_key["render_combination"].isEnabled()
    w.actions_by_key["render_combination"].trigger()
    wait_idle(qtbot, w)
    (tile,) = w.tiles.tiles()
    assert tile.state == DONE and tile.kind == "combination" and tile.array.std() > 5


def test_save_gallery_and_reopen(qtbot, demo_window, tmp_path, monkeypatch, demo_model):
    w = demo_window
    w.jobs.render_units(LOGITS, [0, 5])
    w.jobs.render_deepdream(CONV1)
    wait_idle(qtbot, w)
    folder = tmp_path / "gallery out"
    folder.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.actions_by_key["save_gallery"].trigger()
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert "contact_sheet.png" in pngs and len(pngs) == 4
    assert (folder / "index.html").read_text(encoding="utf-8").count("<img") == 3
    manifest = json.loads((folder / "gallery.json").read_text(encoding="utf-8"))
    assert manifest["model"] == {"file": "demo.onnx", "sha256": demo_model.sha256}
    assert (
        manifest["fvdesk_version"] and manifest["device"].startswith("cpu") and manifest["created"]
    )
    items = {(it["layer"], it["unit"]): it for it in manifest["items"]}
    assert set(items) == {(LOGITS, 0), (LOGITS, 5), (CONV1, -1)}
    dots = items[(LOGITS, 5)]
    assert dots["label"] == "dots" and dots["objective"] == "logit"
    assert dots["provenance"]["settings"]["steps"] == 6
    assert dots["provenance"]["settings"]["size"] == 32
    assert dots["seed"] == 0 and dots["steps"] == 6 and np.isfinite(dots["value"])
    for it in manifest["items"]:
        assert (folder / it["file"]).is_file()

    w.jobs.clear_tiles()
    with qtbot.waitSignal(w.galleries.opened, timeout=30_000):
        w.galleries.open_gallery(folder)
    tiles = w.tiles.tiles()
    assert len(tiles) == 3 and all(t.state == DONE and t.array is not None for t in tiles)
    assert {t.label for t in tiles} >= {"horizontal stripes", "dots"}


def test_save_gallery_error_is_reported(qtbot, demo_window, tmp_path, isolated):
    w = demo_window
    w.jobs.render_units(CONV1, [0])
    wait_idle(qtbot, w)
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("keep me")
    call = w.galleries.save_gallery(not_a_folder)
    qtbot.waitUntil(lambda: bool(isolated), timeout=30_000)
    assert isolated[0][0] == "Cannot Save Gallery"
    assert not_a_folder.read_text() == "keep me"
    assert call is not None and not w.galleries.is_saving()


def test_corrupt_model_shows_error_and_keeps_current(
    qtbot, demo_window, tmp_path, isolated, demo_model
):
    w = demo_window
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe" * 50)
    with qtbot.waitSignal(w.session.load_failed, timeout=LOAD_TIMEOUT):
        w.open_model(bad)
    assert len(isolated) == 1
    title, message = isolated[0]
    assert title == "Cannot Open Model" and "broken.onnx" in message
    assert "\n" not in message.strip()
    assert w.model is demo_model and "demo.onnx" in w.windowTitle()
    assert w.layers.tree_proxy.rowCount() > 0


def test_close_during_render_returns_promptly(qtbot, window, demo_model):
    w = window
    w.session.set_model(demo_model)
    fast_settings(w, steps=20000)
    w.jobs.render_units(CONV1, list(range(4)))
    w.jobs.render_units(CONV1, [5])
    qtbot.waitUntil(lambda: w.tiles.tiles()[0].state == RUNNING, timeout=RENDER_TIMEOUT)
    running, queued = w.queue.current, w.queue.pending()
    w.close()
    # the running render was cancelled (not run to its 20000 steps) and the thread joined
    assert running.cancel.is_set() and all(t.cancel.is_set() for t in queued)
    assert not w.queue.thread_running()


def test_actions_table_builds_menus_and_shortcuts(qtbot, window):
    from fvdesk.gui.shell.actions import ShortcutsDialog, command_specs, shortcut_text

    specs = command_specs()
    keys = [shortcut_text(s) for s in specs if shortcut_text(s)]
    assert len(keys) == len(set(keys)), "two commands share a shortcut"
    in_menus = {a.objectName() for m in window.menus.values() for a in m.actions()}
    assert {f"action_{s.key}" for s in specs} <= in_menus
    assert window.actions_by_key["open"].shortcut().toString() == "Ctrl+O"
    assert window.actions_by_key["save_gallery"].shortcut().toString() == "Ctrl+S"
    assert {m.title() for m in window.menuBar().findChildren(type(window.menus["&File"]))} >= {
        "&File",
        "Open &Recent",
    }
    dlg = ShortcutsDialog(window)
    assert dlg.table.rowCount() == len(specs)


def test_about_lists_versions(qtbot, window):
    from fvdesk.gui.shell.about import AboutDialog

    dlg = AboutDialog("cpu (2 threads)", window)
    names = [k for k, _ in dlg.rows]
    for name in ("fvdesk", "torch", "onnx", "onnxruntime", "onnx2torch", "Qt", "Device"):
        assert name in names
    assert "not installed" not in dict(dlg.rows)["torch"]


def test_settings_and_recent_files_persist(qtbot, tmp_path):
    from fvdesk.gui.shell.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.settings_panel.set_values({"steps": 77, "param": "pixel", "ui:facets": 3})
    w.prefs.add_recent(tmp_path / "a.onnx")
    w.close()
    assert (tmp_path / "settings.ini").is_file()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    values = w2.settings_panel.values()
    assert values["steps"] == 77 and values["param"] == "pixel" and values["ui:facets"] == 3
    assert w2.prefs.recent_files() == [str((tmp_path / "a.onnx").resolve())]
    recent = w2.menus["@recent"]
    w2._fill_recent_menu()
    assert any("a.onnx" in a.text() for a in recent.actions())
    w2.close()


def test_drop_onnx_file_opens_it(qtbot, window, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(window, "open_model", lambda p: opened.append(Path(p)))
    path = tmp_path / "dropped.onnx"
    path.write_bytes(b"x")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)), QUrl.fromLocalFile(str(tmp_path / "notes.txt"))])
    ev = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(ev)
    assert opened == [path]


def test_thousands_of_layers_stay_fast(qtbot, window):
    from fvdesk.core.model.layers import Layer, LayerGraph, TreeNode

    layers, groups = [], []
    for b in range(100):
        kids = []
        for k in range(50):
            name = f"/stage{b}/block{k}/conv/Conv" if k % 2 else f"/stage{b}/block{k}/relu/Relu"
            op = "Conv" if k % 2 else "Relu"
            layer = Layer(name, name + "_out", op, (None, 512, 14, 14), "feature", len(layers))
            layers.append(layer)
            kids.append(TreeNode(f"block{k}", name, layer))
        groups.append(TreeNode(f"stage{b}", f"stage{b}", None, kids))
    graph = LayerGraph(layers, TreeNode("big", "", None, groups))
    window.layers.tree_model.set_graph(graph)
    window.layers.expand_default()
    assert window.layers.tree_model._fetched == {}
    window.layers.tree_proxy.set_needle("block7/")
    assert window.layers.tree_proxy.rowCount() == 100
    # filtering and expanding never walk units: 2.5 million of them, none materialized
    assert window.layers.tree_model._fetched == {}


def test_preprocessing_choice_applies_to_the_next_job(qtbot, demo_window, demo_model):
    from fvdesk.core.resources import resources_dir

    w = demo_window
    original = demo_model.preprocessing
    try:
        w.settings_panel.preset_combo.setCurrentIndex(
            w.settings_panel.preset_combo.findData("unit")
        )
        w.settings_panel.preset_combo.activated.emit(w.settings_panel.preset_combo.currentIndex())
        assert w.session.preprocessing.preset == "unit"
        assert demo_model.preprocessing == original  # only the render thread changes the model
        job = w.jobs.render_units(CONV1, [0])
        assert job.job.preprocessing.preset == "unit"
        wait_idle(qtbot, w)
        # the job ran with the choice it captured; no thread mutates the shared model for it
        (tile,) = [t for t in w.tiles.tiles() if t.job_id == job.id]
        assert tile.result.provenance["preprocessing"]["preset"] == "unit"
        assert demo_model.preprocessing == original
        # the embedded model never gets a sidecar written beside it
        assert not list(Path(resources_dir()).rglob("*.fvdesk.json"))
    finally:
        demo_model.preprocessing = original
        demo_model._extractors.clear()


def test_removing_tiles_cancels_their_jobs(qtbot, demo_window):
    w = demo_window
    fast_settings(w, steps=20000)
    w.jobs.render_units(CONV1, [0])
    second = w.jobs.render_units(CONV1, [1, 2])
    first_tile, *second_tiles = w.tiles.tiles()
    qtbot.waitUntil(lambda: first_tile.state == RUNNING, timeout=RENDER_TIMEOUT)
    w.jobs.remove_tiles({t.id for t in second_tiles})  # all tiles of the queued job: it is dropped
    assert second not in w.queue.pending() and second.cancel.is_set()
    assert w.tiles.rowCount() == 1
    w.tile_view.selectAll()
    w.actions_by_key["remove_tiles"].trigger()  # the running job's only tile: it is cancelled
    wait_idle(qtbot, w, timeout=10_000)
    assert w.tiles.rowCount() == 0


def test_enter_in_the_tree_renders_the_selection(qtbot, demo_window):
    w = demo_window
    idx = proxy_index_of_unit(w, LOGITS, 5)
    w.layers.tree.setCurrentIndex(idx)
    w.layers.tree.setFocus()
    qtbot.keyClick(w.layers.tree, Qt.Key.Key_Return)
    assert [t.label for t in w.tiles.tiles()] == ["dots"]
    wait_idle(qtbot, w)


def test_unit_rows_are_fetched_in_chunks(qtbot):
    from fvdesk.core.model.layers import Layer, LayerGraph, TreeNode
    from fvdesk.gui.tree.model import UNIT_CHUNK, LayerTreeModel

    layer = Layer("/head/fc/Gemm", "logits", "Gemm", (None, 1000), "vector", 0)
    graph = LayerGraph(
        [layer], TreeNode("m", "", None, [TreeNode("fc", layer.name, layer)]), layer.name
    )
    labels = [f"class {i}" for i in range(1000)]
    model = LayerTreeModel(graph, labels)
    top = model.index(0, 0)
    assert model.hasChildren(top) and model.rowCount(top) == 0 and model.canFetchMore(top)
    model.fetchMore(top)
    assert model.rowCount(top) == UNIT_CHUNK
    idx = model.index_of_unit(layer.name, 700)
    assert model.rowCount(top) == 3 * UNIT_CHUNK and idx.data() == "700: class 700"
    assert model.parent(idx) == top and model.ref(idx).unit == 700
    model.set_labels(["x"] * 1000)
    assert idx.data() == "700: x"


def test_closing_the_model_empties_the_layer_tree(qtbot, demo_window, demo_model):
    """Closing a model once left its top-level rows in the tree with no nodes behind them: any
    paint raised IndexError in ``flags``, and a paint forced from Python (a progress bar's
    ``setValue`` repaints at once, as the next load's progress did) crashed PySide6."""
    from fvdesk.core.model.layers import Layer, LayerGraph, TreeNode
    from fvdesk.gui.tree.model import LayerTreeModel

    layer = Layer("/fc/Gemm", "logits", "Gemm", (None, 10), "vector", 0)
    root = TreeNode("m", "", None, [TreeNode("fc", layer.name, layer)])
    tree = LayerTreeModel(LayerGraph([layer], root, layer.name))
    assert tree.rowCount() == 1
    tree.set_graph(None)
    assert tree.rowCount() == 0 and not tree.hasChildren() and not tree.index(0, 0).isValid()

    w = demo_window
    w.layers.select(CONV1, 3)
    w.session.close()
    assert w.layers.tree_proxy.rowCount() == 0
    w.status.show_loading("demo.onnx")
    w.status.show_load_progress(0.5, "Converting")  # paints the window now, the tree included
    w.repaint()
    w.session.set_model(demo_model)


def test_long_sessions_do_not_exhaust_none_refcount():
    """PySide6 6.12.0 drops a reference to None/True/False per C++ call on Python < 3.12 (a few
    minutes of painting aborted the app); pyproject.toml excludes it there, and this checks the
    installed binding."""
    import os
    import subprocess
    import sys

    code = (
        "import fvdesk.gui\n"
        "from PySide6.QtWidgets import QApplication, QProgressBar\n"
        "app = QApplication([])\n"
        "bar = QProgressBar()\n"
        "for _ in range(300_000):\n"
        "    bar.setValue(1)\n"
        "    bar.isHidden()\n"
        "print('survived')\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "survived" in out.stdout, out.stderr[-2000:]


def test_unwritable_sidecar_keeps_the_choice_without_an_error(
    qtbot, demo_window, demo_model, tmp_path, monkeypatch, isolated
):
    """save_sidecar raises ConfigError (not OSError) when the model's folder is read-only: the
    preprocessing and labels choices still apply for the session, and no exception escapes."""
    import fvdesk.core.model.loaded as loaded
    import fvdesk.core.model.sidecar as sidecar
    from fvdesk.core.errors import ConfigError
    from fvdesk.gui.runtime import session as qt_session

    w = demo_window

    def fail(*args, **kwargs):
        raise ConfigError("The sidecar /ro/model.fvdesk.json cannot be written (Read-only).")

    monkeypatch.setattr(sidecar, "save_sidecar", fail)
    monkeypatch.setattr(loaded, "save_sidecar", fail)
    monkeypatch.setattr(qt_session, "is_embedded", lambda path: False)
    labels_file = tmp_path / "classes.txt"
    n = demo_model.graph[LOGITS].channels
    labels_file.write_text("\n".join(f"class {i}" for i in range(n)) + "\n")
    original_pre, original_labels = demo_model.preprocessing, demo_model.labels
    source = demo_model.labels_source
    try:
        w.session.choose_preprocessing("unit")
        assert w.session.preprocessing.preset == "unit"
        w.session.choose_labels_file(str(labels_file))
        assert w.session.labels_file == str(labels_file)
        assert w.session.labels[0] == "class 0" and demo_model.labels == original_labels
        assert isolated == []
        assert "not remembered" in w.log_view.toPlainText()
    finally:
        demo_model.preprocessing, demo_model.labels = original_pre, original_labels
        demo_model.labels_source = source


def test_save_gallery_keeps_every_tile_of_the_same_unit(qtbot, demo_window, demo_model, tmp_path):
    """Two renders with the same gallery key (a unit rendered twice, two combinations starting
    on the same layer) must both be saved, not silently collapsed into one."""
    from fvdesk.core.output.gallery import GalleryItem, read_gallery
    from fvdesk.gui.canvas.tiles import Tile

    w = demo_window
    tiles = []
    for i in range(3):
        item = GalleryItem(layer=CONV1, unit=-1, objective="combination", seed=i)
        tiles.append(
            Tile(
                layer=CONV1,
                unit=-1,
                kind="combination",
                caption=f"combo {i}",
                state=DONE,
                array=np.full((8, 8, 3), 40 * i, np.uint8),
                result=item,
                model_sha=demo_model.sha256,
                model_file=demo_model.name,
            )
        )
    w.tiles.add(tiles)
    folder = tmp_path / "g"
    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.galleries.save_gallery(folder)
    _, pairs = read_gallery(folder)
    assert sorted(it.seed for it, _ in pairs) == [0, 1, 2]
    assert len({it.file for it, _ in pairs}) == 3


def test_tiny_canvas_sizes_are_raised_to_the_engines_minimum():
    from fvdesk.gui.settings.panel import to_render_settings

    assert to_render_settings({"size": 3}).size == 8
    assert to_render_settings({"size": 0}).size is None
    assert to_render_settings({"size": 96}).size == 96


def _tab_groups(w) -> list[tuple[str, ...]]:
    from PySide6.QtWidgets import QTabBar

    bars = [b for b in w.findChildren(QTabBar) if b.isVisible() and b.parent() is w]  # docks
    return sorted(tuple(b.tabText(i) for i in range(b.count())) for b in bars)


def test_default_dock_tabs_without_stray_tab_bars(qtbot, window):
    """Each tab group shows one tab bar, after the first show and after Reset Layout (tabbing
    docks before the window is on screen left a second, empty bar over the dock titles)."""
    expected = [("Combination", "Neuron Position"),
                ("Render Settings", "Dataset Examples", "Inspect Image")]  # fmt: skip
    qtbot.waitUntil(lambda: _tab_groups(window) == expected)
    window.docks.show_lazy(window.browser_dock)  # the layer browser joins the messages
    qtbot.waitUntil(lambda: ("Messages", "Layer Examples") in _tab_groups(window))
    assert len(_tab_groups(window)) == 3
    window.reset_layout()
    qtbot.waitUntil(lambda: _tab_groups(window) == expected)
    assert not window.browser_dock.isVisible()


def test_early_stop_and_averaging_from_the_dock(qtbot, demo_window):
    """The dock's early stop ends a long render once it has converged, and the dock's settings
    are what the tile records (so a saved gallery reproduces them)."""
    w = demo_window
    fast_settings(w, steps=600, size=16, early_stop=0.5, average=0.25)
    w.jobs.render_units(LOGITS, [1])
    wait_idle(qtbot, w)
    tile = w.tiles.tiles()[-1]
    assert tile.state == DONE, tile.message
    settings = tile.result.provenance["settings"]
    assert settings["early_stop"] == 0.5 and settings["average"] == 0.25
    assert 0 < tile.result.steps < 600  # converged long before the 600 steps asked
