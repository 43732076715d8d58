"""The app's activation atlas window, offscreen: a build runs off the GUI thread with progress,
tiles land on the map, zoom switches the level of detail, hover and double-click show a cell,
the class filter dims the others, and Cancel stops a build.

The map's 2-D layout is the first two principal components here (``reduce_2d`` patched), so the
test does not spend UMAP's compile time; tests/core/actatlas/test_actatlas.py runs UMAP itself."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, Qt  # noqa: E402

from fvdesk.core.actatlas import build  # noqa: E402
from fvdesk.core.jobs.job import Job  # noqa: E402
from fvdesk.core.model.loader import load_model  # noqa: E402
from fvdesk.core.optim.settings import RenderSettings  # noqa: E402
from fvdesk.gui.actatlas.view import THUMB_PX  # noqa: E402
from fvdesk.gui.actatlas.window import ActivationAtlasWindow  # noqa: E402
from fvdesk.gui.runtime.runners import QueueRunner  # noqa: E402
from fvdesk.gui.runtime.worker import RenderQueue  # noqa: E402
from tests.images import pattern_folder  # noqa: E402

LAYER = "/features/block4/relu/Relu"


class Session:
    """What the window needs of the app's ModelSession."""

    def __init__(self, model) -> None:
        self.model = model

    def job_for(self, spec, settings, *, title: str = "") -> Job:
        return Job.for_model(self.model, spec, settings, title=title)


def pca(vectors, *, seed, neighbors, min_dist):
    x = vectors - vectors.mean(0)
    _u, _s, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


@pytest.fixture
def win(qtbot, demo_model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "reduce_2d", pca)
    model = load_model(demo_model_path, check_parity=False)
    queue = RenderQueue()
    runner = QueueRunner(queue)
    w = ActivationAtlasWindow(runner, Session(model), lambda: RenderSettings(steps=4, batch=4),
                              layer=LAYER, folder=str(pattern_folder(tmp_path / "img", 4)))  # fmt: skip
    w.out.setText(str(tmp_path / "atlas"))
    w.grid.setValue(6)
    w.per_image.setValue(4)
    qtbot.addWidget(w)
    w.show()
    yield w
    queue.shutdown()


def test_build_then_explore(qtbot, win):
    gui = threading.current_thread()
    seen_threads: list[threading.Thread] = []
    orig = build.collect

    def spy(*a, **k):
        seen_threads.append(threading.current_thread())
        return (yield from orig(*a, **k))

    build.collect = spy
    try:
        qtbot.mouseClick(win.build_button, Qt.MouseButton.LeftButton)
        assert win.cancel_button.isEnabled()
        qtbot.waitUntil(lambda: win.build_button.isEnabled(), timeout=120_000)
    finally:
        build.collect = orig
    assert seen_threads and gui not in seen_threads  # the model work ran off the GUI thread
    assert "cells" in win.status.text(), win.status.text()
    win.grid.setValue(9)
    assert win.show_folder(win.out.text()) and win.grid.value() == 6  # the atlas's own
    items = list(win.view.items_by_id.values())
    assert items and all(it.full is not None for it in items)
    assert win.progress.value() == win.progress.maximum() == len(items)

    # level of detail: far out thumbnails, close in full tiles
    win.view.fit()
    win.view.zoom_by(0.1)
    win.view.viewport().grab()
    assert {it.lod for it in items} == {"thumb"}
    win.view.resetTransform()
    win.view.zoom = 1.0
    win.view.zoom_by(2 * THUMB_PX / 64)
    win.view.centerOn(items[0])
    win.view.viewport().grab()
    assert items[0].lod == "full"

    # wheel zoom changes the scale
    before = win.view.zoom
    qtbot.wait(1)
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QWheelEvent

    ev = QWheelEvent(QPointF(50, 50), QPointF(50, 50), QPoint(0, 0), QPoint(0, 120),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                     Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    win.view.wheelEvent(ev)
    assert win.view.zoom > before

    # hover: the details panel shows the cell's count, top units and crops
    item = items[0]
    with qtbot.waitSignal(win.view.hovered, timeout=2000) as got:
        win.view.hovered.emit(item.cell)
    assert f"{item.cell['count']:,} vectors" in win.details.text()
    assert "Top units" in win.details.text() and win.crops.count() == len(item.cell["crops"])
    assert got.args[0] is item.cell

    # double-click a cell: its dialog, and Render Larger runs on the runner
    win.view.fit()
    pos = win.view.mapFromScene(item.sceneBoundingRect().center())
    with qtbot.waitSignal(win.view.activated, timeout=2000):
        qtbot.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    dialog = win._dialogs[-1]
    assert dialog.isVisible() and dialog.render_button.isEnabled()
    qtbot.mouseClick(dialog.render_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "twice" in dialog.render_button.text(), timeout=60_000)
    assert dialog.image.pixmap().width() == 384

    # the class filter dims the cells of other classes
    assert win.classes.count() >= 2
    win.classes.setCurrentIndex(1)
    k = win.classes.currentData()
    assert win.view.class_filter == k
    win.classes.setCurrentIndex(0)
    assert win.view.class_filter is None


def test_cancel_stops_a_build_and_building_again_resumes(qtbot, win):
    qtbot.mouseClick(win.build_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(win.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.build_button.isEnabled(), timeout=120_000)
    assert "Cancel" in win.status.text() or "cells" in win.status.text()
    qtbot.mouseClick(win.build_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.build_button.isEnabled(), timeout=120_000)
    assert "cells" in win.status.text(), win.status.text()
    assert (Path(win.out.text()) / "atlas.png").is_file()


def test_a_folder_that_is_no_atlas_says_so(win, tmp_path):
    assert not win.show_folder(tmp_path)
    assert "does not exist" in win.status.text()
