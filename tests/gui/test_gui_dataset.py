"""Dataset examples in the real window (pytest-qt, offscreen): the choice per model, the panel
beside a render, the examples-only browser, galleries with examples, the colour matrix, cluster
facets and bad folders.  Folders are tiny generated pattern images of known classes; renders use
a few steps (tests/gui/support.fast_settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QDialog  # noqa: E402

from fvdesk.core.dataset.choice import DatasetChoice  # noqa: E402
from fvdesk.gui.canvas.tiles import DONE  # noqa: E402
from fvdesk.gui.dataset.dialog import DatasetDialog  # noqa: E402
from fvdesk.gui.shell.prefs import Prefs  # noqa: E402
from tests.gui.support import LOGITS, RENDER_TIMEOUT, wait_idle  # noqa: E402
from tests.images import class_dir, pattern_folder  # noqa: E402

BLOCK3 = "/features/block3/relu/Relu"
TIMEOUT = 60_000


@pytest.fixture(autouse=True)
def _private(isolated, examples_cache):
    return isolated


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    """32 images, 4 of each demo class (c0 ... c7), 32 px."""
    return pattern_folder(tmp_path_factory.mktemp("patterns"), per_class=4, size=32)


def choose(qtbot, w, choice: DatasetChoice) -> None:
    """The user's choice through the controller (checked off the GUI thread), awaited."""
    w.datasets.apply_choice(choice)
    qtbot.waitUntil(lambda: w.datasets.choice == choice, timeout=TIMEOUT)


def render_and_select(qtbot, w, layer: str, unit: int):
    w.jobs.render_units(layer, [unit])
    wait_idle(qtbot, w)
    tile = w.tiles.tiles()[-1]
    assert tile.state == DONE
    w.tile_view.setCurrentIndex(w.tiles.index(w.tiles.rowCount() - 1, 0))
    return tile


def test_dialog_choice_is_remembered_per_model_and_restored(qtbot, demo_window, patterns,
                                                            monkeypatch):  # fmt: skip
    w = demo_window
    sha = w.model.sha256
    assert w.actions_by_key["dataset"].isEnabled()
    assert not w.actions_by_key["dataset_spectrum"].isEnabled()

    def exec_(dlg: DatasetDialog) -> int:
        dlg.folder.setText(str(patterns))
        dlg.top.setValue(5)
        dlg.bottom.setValue(2)
        qtbot.waitUntil(lambda: "32 images" in dlg.summary.text(), timeout=TIMEOUT)
        return QDialog.DialogCode.Accepted.value

    monkeypatch.setattr(DatasetDialog, "exec", exec_)
    w.actions_by_key["dataset"].trigger()
    want = DatasetChoice(str(patterns), 5, 2, False)
    qtbot.waitUntil(lambda: w.datasets.choice == want, timeout=TIMEOUT)
    assert Prefs().dataset_for(sha) == want.to_dict()
    assert Prefs().dataset_for("0" * 64) == {}  # another model has none
    assert w.actions_by_key["dataset_spectrum"].isEnabled()

    model = w.model
    w.session.set_model(None)
    assert w.datasets.choice is None
    w.session.set_model(model)  # reopened: the choice comes back from the preferences
    assert w.datasets.choice == want
    from fvdesk.gui.shell.main_window import MainWindow

    other = MainWindow()  # the next start of the app
    qtbot.addWidget(other)
    try:
        other.session.set_model(model)
        assert other.datasets.choice == want
    finally:
        other.shutdown(timeout_ms=20_000)

    # MACO's spectrum: the dataset folder goes into the settings dock's spectrum field
    w.actions_by_key["dataset_spectrum"].trigger()
    assert w.settings_panel.value("maco_spectrum") == str(patterns)


def test_render_then_select_shows_the_units_top_examples(qtbot, demo_window, patterns):
    w = demo_window
    panel = w.datasets.panel
    assert "Choose a dataset" in panel.status.text()
    choose(qtbot, w, DatasetChoice(str(patterns), 4, 2))
    tile = render_and_select(qtbot, w, LOGITS, 3)
    qtbot.waitUntil(lambda: panel.examples is not None, timeout=TIMEOUT)
    ux = panel.examples
    assert (ux.layer, ux.unit, ux.measure, ux.count) == (LOGITS, 3, "channel", 32)
    assert len(ux.top) == 4 and len(ux.bottom) == 2 and len(panel.tiles) == 6
    values = [e.value for e in ux.top]
    assert values == sorted(values, reverse=True)
    # the classifier's class-3 logit is highest on class-3 patterns
    assert all(Path(e.rel).parent.name == class_dir(3) for e in ux.top[:2])
    assert panel.histogram.value == pytest.approx(tile.value)
    assert "The render" in panel.hist_text.text()
    qtbot.waitUntil(lambda: all(t.loaded for t in panel.tiles), timeout=TIMEOUT)
    assert all(t.full is not None for t in panel.tiles)
    # a DeepDream tile is not one unit
    w.jobs.render_deepdream(BLOCK3)
    wait_idle(qtbot, w)
    w.tile_view.setCurrentIndex(w.tiles.index(w.tiles.rowCount() - 1, 0))
    assert panel.examples is None and "per unit" in panel.status.text()


def examples_entry(w, browse):
    """The layer tree's context-menu entry for the selected layer's dataset examples."""
    from fvdesk.gui.shell.menus import tree_menu

    (ref,) = w.layers.selected_refs()
    menu = tree_menu(w, ref, w.jobs, w.article, browse)
    (act,) = [a for a in menu.actions() if a.text() == "Dataset Examples of This Layer"]
    return act


def test_layer_browser_fills_rows_without_rendering(qtbot, demo_window, patterns):
    w = demo_window
    w.layers.select(BLOCK3)
    assert not w.actions_by_key["layer_examples"].isEnabled()  # no dataset yet
    assert not examples_entry(w, None).isEnabled()
    assert not w.browser_dock.isVisible()
    choose(qtbot, w, DatasetChoice(str(patterns), 3, 0))
    assert w.actions_by_key["layer_examples"].isEnabled()
    examples_entry(w, w.datasets.browse_layer).trigger()
    browser = w.datasets.browser
    qtbot.waitUntil(lambda: browser.layer_examples is not None, timeout=TIMEOUT)
    assert browser.layer_examples.layer == BLOCK3 and w.browser_dock.isVisible()
    channels = w.model.graph[BLOCK3].channels
    assert browser.rows.rowCount() == channels
    assert w.tiles.rowCount() == 0  # nothing rendered
    qtbot.waitUntil(lambda: bool(browser.rows.crops), timeout=TIMEOUT)
    assert all(len(c) == 3 for c in browser.rows.crops.values())
    # the pass is reused by the panel: selecting a unit row shows it there
    assert (BLOCK3, "channel", None, None) in w.datasets.examples
    browser.view.setCurrentIndex(browser.rows.index(2))
    assert w.datasets.panel.examples.unit == 2


def test_saved_gallery_carries_the_examples(qtbot, demo_window, patterns, tmp_path):
    w = demo_window
    choose(qtbot, w, DatasetChoice(str(patterns), 3, 1))
    render_and_select(qtbot, w, LOGITS, 5)
    qtbot.waitUntil(lambda: w.datasets.panel.examples is not None, timeout=TIMEOUT)
    out = tmp_path / "gallery"
    with qtbot.waitSignal(w.datasets.attached, timeout=TIMEOUT) as sig:
        w.galleries.save_gallery(out)
    assert sig.args == [str(out), 1]
    crops = sorted(p.name for p in (out / "examples").iterdir())
    assert len(crops) == 4  # 3 top + 1 bottom
    manifest = json.loads((out / "gallery.json").read_text())
    (item,) = manifest["items"]
    record = item["examples"]
    assert item["unit"] == 5 and len(record["top"]) == 3 and len(record["bottom"]) == 1
    assert "examples" in (out / "index.html").read_text()


def test_colour_matrix_reaches_the_jobs_provenance(qtbot, demo_window, patterns):
    w = demo_window
    choose(qtbot, w, DatasetChoice(str(patterns), 2, 0, colours=True))
    qtbot.waitUntil(lambda: w.datasets.color_matrix is not None, timeout=TIMEOUT)
    matrix = w.datasets.color_matrix
    tile = render_and_select(qtbot, w, LOGITS, 1)
    recorded = tile.result.provenance["settings"]["color_matrix"]
    assert sum(recorded, []) == pytest.approx(sum(matrix, []))
    choose(qtbot, w, DatasetChoice(str(patterns), 2, 0, colours=False))
    tile = render_and_select(qtbot, w, LOGITS, 1)
    assert tile.result.provenance["settings"]["color_matrix"] is None


def test_a_bad_folder_is_one_sentence_and_keeps_the_previous_choice(qtbot, demo_window,
                                                                    patterns, tmp_path):  # fmt: skip
    w = demo_window
    good = DatasetChoice(str(patterns), 3, 3)
    choose(qtbot, w, good)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    for folder in (empty, tmp_path / "missing"):
        n = len(w.errors)
        w.datasets.apply_choice(DatasetChoice(str(folder)))
        qtbot.waitUntil(lambda n=n: len(w.errors) > n, timeout=TIMEOUT)
        title, message = w.errors[-1]
        assert str(folder) in message and "\n" not in message.strip()
        assert w.datasets.choice == good
        assert Prefs().dataset_for(w.model.sha256) == good.to_dict()


def test_facets_from_dataset_clusters(qtbot, demo_window, patterns):
    w = demo_window
    choose(qtbot, w, DatasetChoice(str(patterns), 4, 0))
    w.settings_panel.set_values({"ui:cluster_facets": True, "ui:facets": 2})
    w.layers.select(LOGITS, 2)
    w.actions_by_key["render_facets"].trigger()
    qtbot.waitUntil(lambda: w.tiles.rowCount() == 2, timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)
    tiles = w.tiles.tiles()
    assert [t.kind for t in tiles] == ["cluster", "cluster"] and all(t.state == DONE for t in tiles)
    assert "cluster 2/2" in tiles[1].caption
    spec = tiles[1].spec
    assert tiles[1].result.provenance["job"]["centroids"]
    w.tile_view.setCurrentIndex(w.tiles.index(1, 0))
    qtbot.waitUntil(lambda: w.datasets.panel.examples is not None, timeout=TIMEOUT)
    shown = [e.rel for e in w.datasets.panel.examples.top]
    assert shown == list(spec.members[1][:4])
    # several units at once: each gets its clusters (one pass for the layer)
    w.jobs.render_units(LOGITS, [4, 5], facets=2)
    qtbot.waitUntil(lambda: w.tiles.rowCount() == 6, timeout=RENDER_TIMEOUT)
    wait_idle(qtbot, w)
    assert sorted(t.unit for t in w.tiles.tiles()[2:]) == [4, 4, 5, 5]
    assert all(t.kind == "cluster" and t.state == DONE for t in w.tiles.tiles())


def test_the_pass_shows_progress_and_the_cancel_action_stops_it(qtbot, demo_window, patterns,
                                                                monkeypatch):  # fmt: skip
    import threading

    from fvdesk.core.jobs import passes

    w = demo_window
    choose(qtbot, w, DatasetChoice(str(patterns), 3, 0))
    started, go = threading.Event(), threading.Event()
    decode = passes._decode

    def held(*args):
        started.set()
        go.wait(30)
        return decode(*args)

    monkeypatch.setattr(passes, "_decode", held)
    tile = render_and_select(qtbot, w, BLOCK3, 1)
    qtbot.waitUntil(started.is_set, timeout=TIMEOUT)
    assert w.queue.busy() and w.actions_by_key["cancel"].isEnabled()
    assert w.status.job_label.text().startswith("Dataset pass: 0/32 images")
    w.actions_by_key["cancel"].trigger()
    go.set()
    panel = w.datasets.panel
    qtbot.waitUntil(lambda: "cancelled" in panel.status.text(), timeout=TIMEOUT)
    assert panel.examples is None and not w.datasets.examples
    wait_idle(qtbot, w)
    w.datasets.show_tile(tile)  # selected again: the pass resumes from the cache
    qtbot.waitUntil(lambda: panel.examples is not None, timeout=TIMEOUT)
    assert panel.examples.count == 32
