"""The status bar: time left for every kind of long work, and what a partial conversion cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtGui import QAction  # noqa: E402
from PySide6.QtWidgets import QMainWindow  # noqa: E402

from fvdesk.core.model.loader import load_model  # noqa: E402
from fvdesk.core.output import gallery as gal  # noqa: E402
from fvdesk.gui.shell.status import StatusWidgets  # noqa: E402
from tests import models as test_models  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def status(qapp):
    win = QMainWindow()
    clock = Clock()
    st = StatusWidgets(win.statusBar(), QAction("Cancel", win), clock=clock)
    yield st, clock
    win.close()


def test_progress_shows_time_left_once_there_is_evidence(status) -> None:
    st, clock = status
    st.show_progress(0.0, "Rendering x")
    assert st.job_progress.format() == "0%"  # no estimate before any work is measured
    clock.t += 10
    st.show_progress(0.5, "Rendering x")
    assert st.job_progress.format() == "50% · eta 10s"
    assert "about 10s left" in st.job_progress.toolTip()
    assert st.job_label.text() == "Rendering x"


def test_each_source_keeps_its_own_estimate(status) -> None:
    st, clock = status
    st.show_progress(0.0, "render")
    clock.t += 10
    st.show_progress(0.25, "render")  # 30 s left at this rate
    st.show_progress(0.0, "Saving", "gallery")  # a save starts: the render's estimate survives
    clock.t += 1
    st.show_progress(0.5, "render")
    est = st.estimate("jobs", 0.5)
    assert est.remaining is not None and 10 < est.remaining < 30
    st.finish("gallery")
    assert st.job_progress.isVisibleTo(st.bar.parentWidget())  # the render still runs
    st.finish("jobs")
    assert not st.job_progress.isVisibleTo(st.bar.parentWidget())
    assert st.job_label.text() == "idle"


def test_loading_progress_has_an_eta(status) -> None:
    st, clock = status
    st.show_loading("big.onnx")
    st.show_load_progress(0.0, "Reading")
    clock.t += 4
    st.show_load_progress(0.5, "Converting")
    assert st.load_progress.format() == "Loading big.onnx · eta 4s"
    st.hide_loading()
    st.show_loading("next.onnx")
    st.show_load_progress(0.1, "Reading")  # a new load starts a new estimate
    assert st.load_progress.format() == "Loading next.onnx"


def test_partial_conversion_stays_in_the_status_bar(status, model_cache: Path) -> None:
    st, _clock = status
    m = load_model(test_models.conv_custom_op_onnx(model_cache), check_parity=False)
    st.show_model(m, m.preprocessing, "metadata")
    assert st.cut_label.isVisibleTo(st.bar.parentWidget())
    assert (
        "FusedPoolHead" in st.cut_label.toolTip()
        and "partially converted" in st.cut_label.toolTip()
    )
    st.show_model(None, None, "")
    assert not st.cut_label.isVisibleTo(st.bar.parentWidget())


def test_gallery_save_and_read_report_progress(tmp_path: Path) -> None:
    items = [
        (gal.GalleryItem(layer="conv", unit=u, facet=0, objective="channel"), np.zeros((8, 8, 3)))
        for u in range(3)
    ]
    seen: list[float] = []
    gal.write_gallery(tmp_path / "g", gal.ModelInfo("m.onnx", "0" * 64), items,
                      progress=lambda f, _m: seen.append(f))  # fmt: skip
    assert len(seen) == 4 and seen == sorted(seen) and seen[0] == 0 and seen[-1] < 1
    read: list[float] = []
    _manifest, pairs = gal.read_gallery(tmp_path / "g", progress=lambda f, _m: read.append(f))
    assert len(pairs) == 3 and read == [0, 1 / 3, 2 / 3]


def test_work_done_before_the_first_report_is_not_speed(status) -> None:
    st, clock = status
    st.show_progress(0.5, "resumed")  # e.g. the rest of a batch whose first half was done
    clock.t += 10
    st.show_progress(0.75, "resumed")
    assert st.job_progress.format() == "75% · eta 10s"
