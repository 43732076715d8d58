"""The dataset-examples widgets on their own (pytest-qt, offscreen): the runner, the unit panel,
the layer browser and the dataset dialog; model work must never run on the GUI thread.  The
widgets get the app's own runner (``QueueRunner`` over a ``RenderQueue``): one background
mechanism, driven here with ``qtbot.waitUntil``/``waitSignal``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from fvdesk.core.dataset.choice import DatasetChoice  # noqa: E402
from fvdesk.core.jobs.job import ExamplesJob, Job  # noqa: E402
from fvdesk.core.jobs.run import run_job  # noqa: E402
from fvdesk.core.optim.drive import drive  # noqa: E402
from fvdesk.core.optim.events import ProgressEvent  # noqa: E402
from fvdesk.gui.dataset.browser import LayerExamplesBrowser  # noqa: E402
from fvdesk.gui.dataset.dialog import DatasetDialog  # noqa: E402
from fvdesk.gui.dataset.examples import ExamplesPanel, percent_text  # noqa: E402
from fvdesk.gui.runtime.runners import QueueRunner  # noqa: E402
from fvdesk.gui.runtime.worker import RenderQueue  # noqa: E402
from fvdesk.gui.shell import prefs as qt_prefs  # noqa: E402
from tests.images import class_dir, pattern_folder  # noqa: E402

LOGITS = "/classifier/Gemm"
BLOCK3 = "/features/block3/relu/Relu"
TIMEOUT = 60_000


@pytest.fixture(autouse=True)
def isolated(examples_cache, tmp_path_factory, monkeypatch):
    monkeypatch.setenv(qt_prefs.SETTINGS_ENV, str(tmp_path_factory.mktemp("s") / "s.ini"))


@pytest.fixture(scope="module")
def demo(demo_model_path):
    from fvdesk.core.model.loader import load_model

    return load_model(demo_model_path, check_parity=False)


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    return pattern_folder(tmp_path_factory.mktemp("patterns"), per_class=6)


class SpyRunner(QueueRunner):
    """The app's runner, on a render queue of its own, recording on which threads work ran."""

    def __init__(self) -> None:
        super().__init__(RenderQueue())
        self.threads: list[threading.Thread] = []

    def shutdown(self, timeout: float) -> bool:
        return self.queue.shutdown(int(timeout * 1000))

    def call(self, fn, on_done, on_failed):  # type: ignore[override]
        def wrapped():
            self.threads.append(threading.current_thread())
            return fn()

        super().call(wrapped, on_done, on_failed)

    def submit(self, model, job, on_event, on_done, on_failed):  # type: ignore[override]
        from fvdesk.core.jobs import passes

        original = passes.scan_folder

        def spy(*a, **k):
            self.threads.append(threading.current_thread())
            return original(*a, **k)

        passes.scan_folder = spy
        self._restore = (passes, original)
        return super().submit(model, job, on_event, on_done, on_failed)


@pytest.fixture
def runner(qtbot):
    r = SpyRunner()
    yield r
    assert r.shutdown(30)
    if hasattr(r, "_restore"):
        mod, original = r._restore
        mod.scan_folder = original
    assert threading.main_thread() not in r.threads


def test_percent_text() -> None:
    assert [percent_text(f) for f in (0.0, 0.5, 0.9995, 1.0, 0.0004)] == [
        "0.0%", "50.0%", ">99.9%", "100.0%", "<0.1%",
    ]  # fmt: skip


def test_runner_drives_jobs_with_progress_cancel_and_errors(
    qtbot, runner, demo, patterns, tmp_path
):
    events, results, errors = [], [], []
    job = Job.for_model(demo, ExamplesJob(str(patterns), (LOGITS,), batch=8))
    runner.submit(demo, job, events.append, results.append, errors.append)
    qtbot.waitUntil(lambda: bool(results or errors), timeout=TIMEOUT)
    assert not errors and results[0].images == 48
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress[-1].done == progress[-1].total == 48
    (tmp_path / "none").mkdir()
    bad = Job.for_model(demo, ExamplesJob(str(tmp_path / "none"), (LOGITS,)))
    runner.submit(demo, bad, events.append, results.append, errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=TIMEOUT)
    assert "holds no images" in errors[0] and errors[0].count("\n") == 0
    from fvdesk.core.dataset.cache import clear_cache

    clear_cache()
    done = []
    cancel = runner.submit(demo, job, lambda ev: cancel(), done.append, errors.append)
    qtbot.waitUntil(lambda: bool(done), timeout=TIMEOUT)
    assert done[0].cancelled and done[0].images < 48


@pytest.fixture(scope="module")
def logit_examples(demo, patterns):
    """The pass run directly (the panel only displays; how it got the data is the window's)."""
    import os
    import tempfile

    old = os.environ.get("FVDESK_CACHE_DIR")
    os.environ["FVDESK_CACHE_DIR"] = tempfile.mkdtemp()
    try:
        job = Job.for_model(demo, ExamplesJob(str(patterns), (LOGITS, BLOCK3), top=6, bottom=3))
        return drive(run_job(demo, job))
    finally:
        if old is not None:
            os.environ["FVDESK_CACHE_DIR"] = old


def test_panel_shows_top_and_bottom_with_boxes_histogram_and_opens(qtbot, runner, logit_examples):
    panel = ExamplesPanel(runner, open_externally=False)
    qtbot.addWidget(panel)
    panel.resize(700, 900)
    panel.show()
    ux = logit_examples.layers[LOGITS].unit(4)
    with qtbot.waitSignal(panel.loaded, timeout=TIMEOUT):
        panel.show_unit(ux, render_value=ux.histogram.maximum * 2)
    assert len(panel.tiles) == 9 and all(
        t.full is not None and t.crop is not None for t in panel.tiles
    )
    top = panel.tiles[:6]
    assert sum(t.example.rel.startswith(class_dir(4) + "/") for t in top) >= 5
    assert "above 100.0% of them" in panel.hist_text.text()
    assert panel.histogram.marker_x() == pytest.approx(panel.histogram.width() - 2)
    # a feature map's examples carry the receptive-field box, drawn inside the full image
    feat = logit_examples.layers[BLOCK3].unit(7)
    with qtbot.waitSignal(panel.loaded, timeout=TIMEOUT):
        panel.show_unit(feat, render_value=None)
    x0, y0, x1, y1 = panel.tiles[0].box
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and (x1 - x0) < 64
    panel.grab()  # paints every tile without error
    with qtbot.waitSignal(panel.open_requested, timeout=5000) as opened:
        qtbot.mouseDClick(panel.tiles[1], Qt.MouseButton.LeftButton, pos=QPoint(20, 20))
    assert opened.args[0] == feat.root / panel.tiles[1].example.rel


def test_panel_drops_results_of_a_unit_no_longer_shown(qtbot, runner, logit_examples):
    panel = ExamplesPanel(runner, open_externally=False)
    qtbot.addWidget(panel)
    le = logit_examples.layers[LOGITS]
    panel.show_unit(le.unit(0))
    with qtbot.waitSignal(panel.loaded, timeout=TIMEOUT):
        panel.show_unit(le.unit(5))
    qtbot.wait(200)
    assert [t.example.rel for t in panel.tiles] == [
        e.rel for e in le.unit(5).top + le.unit(5).bottom
    ]
    panel.clear("no dataset")
    assert panel.tiles == [] and panel.status.text() == "no dataset"


def test_browser_runs_the_pass_and_shows_units_without_rendering(qtbot, runner, demo, patterns):
    browser = LayerExamplesBrowser(runner)
    qtbot.addWidget(browser)
    browser.resize(900, 500)
    browser.show()
    with qtbot.waitSignal(browser.examples_ready, timeout=TIMEOUT) as ready:
        browser.run(demo, LOGITS, DatasetChoice(str(patterns), top=4, bottom=0))
    assert ready.args[0].layers[LOGITS].units == 8
    assert browser.rows.rowCount() == 8 and "horizontal stripes" in browser.rows.captions[0]
    assert browser.progress.isHidden() and not browser.running
    qtbot.waitUntil(lambda: len(browser.rows.crops) >= 3, timeout=TIMEOUT)  # rows on screen load
    assert all(len(c) == 4 for c in browser.rows.crops.values())
    index = browser.rows.index(2)
    rect = browser.view.visualRect(index)
    with qtbot.waitSignal(browser.unit_selected, timeout=5000) as sel:
        qtbot.mouseClick(browser.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert sel.args == [LOGITS, 2]
    with qtbot.waitSignal(browser.unit_activated, timeout=5000) as act:
        qtbot.mouseDClick(browser.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert act.args == [LOGITS, 2]


def test_dataset_dialog_scans_persists_and_clears_the_cache(
    qtbot, runner, patterns, logit_examples, tmp_path
):
    from fvdesk.core.dataset.cache import cache_size

    dlg = DatasetDialog(runner, None, model_sha256="0" * 64)
    qtbot.addWidget(dlg)
    ok = dlg.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    with qtbot.waitSignal(dlg.scanned, timeout=TIMEOUT) as scanned:
        dlg.folder.setText(str(patterns))
    assert scanned.args[0] == "48 images." and ok.isEnabled()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with qtbot.waitSignal(dlg.scanned, timeout=TIMEOUT) as scanned:
        dlg.folder.setText(str(tmp_path / "notes"))
    assert scanned.args[0] == "0 images, 1 other files." and not ok.isEnabled()
    dlg.folder.setText(str(patterns))
    qtbot.waitUntil(ok.isEnabled, timeout=TIMEOUT)
    dlg.top.setValue(5)
    dlg.colours.setChecked(True)
    choice = dlg.choice()
    assert choice == DatasetChoice(str(patterns), 5, 9, True)
    prefs = qt_prefs.Prefs()
    prefs.set_dataset_for("ab" * 32, choice.to_dict())
    assert DatasetChoice.from_dict(qt_prefs.Prefs().dataset_for("ab" * 32)) == choice
    assert DatasetChoice.from_dict({"root": ""}) is None
    # the cache of this model (sha 000…) and of another: sizes shown, this model's cleared
    from fvdesk.core.dataset.cache import examples_dir

    for folder, size in (("0" * 16, 5000), ("f" * 16, 2000)):
        (examples_dir() / folder / "k").mkdir(parents=True, exist_ok=True)
        (examples_dir() / folder / "k" / "seg.rows").write_bytes(b"0" * size)
    dlg._refresh_cache()
    want = "5.0 KB for this model, 7.0 KB in all"
    qtbot.waitUntil(lambda: dlg.cache_label.text() == want, timeout=TIMEOUT)
    qtbot.mouseClick(dlg.clear_button, Qt.MouseButton.LeftButton)
    want = "0 bytes for this model, 2.0 KB in all"
    qtbot.waitUntil(lambda: dlg.cache_label.text() == want, timeout=TIMEOUT)
    assert cache_size() == 2000
    qtbot.mouseClick(dlg.none_button, Qt.MouseButton.LeftButton)
    assert dlg.choice() is None


def test_queue_runner_runs_the_pass_on_the_render_queue(qtbot, demo, patterns):
    queue = RenderQueue()
    try:
        runner = QueueRunner(queue)
        events, results, errors, threads = [], [], [], []
        job = Job.for_model(demo, ExamplesJob(str(patterns), (LOGITS,), batch=16))
        runner.submit(demo, job, events.append, results.append, errors.append)
        qtbot.waitUntil(lambda: bool(results or errors), timeout=TIMEOUT)
        assert not errors and results[0].images == 48
        assert any(isinstance(e, ProgressEvent) for e in events)

        def where():
            threads.append(threading.current_thread())
            return 42

        got = []
        runner.call(where, got.append, errors.append)
        qtbot.waitUntil(lambda: bool(got), timeout=TIMEOUT)
        assert got == [42] and threads[0] is not threading.main_thread()
    finally:
        assert queue.shutdown(30_000)
