"""The app's parts for the article, each in isolation (pytest-qt): combination builder, neuron
position picker, direction/interpolation dialogs, figure strips, the settings dock's new fields,
and one real run through ``JobRunner`` that must keep model work off the GUI thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import Qt

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.events import JobResult, PreviewEvent, StepEvent, UnitDoneEvent, UnitResult
from fvdesk.core.optim.jobs import (
    CombinationJob,
    DirectionJob,
    InterpolationJob,
    SpectrumJob,
    SteepestJob,
    Term,
    parse_objective,
)
from fvdesk.gui.qt_tiles import DONE, QUEUED, RUNNING

L = "/features/block3/relu/Relu"


class FakeController:
    """``submit(spec, sink) -> cancel`` that records instead of rendering."""

    def __init__(self) -> None:
        self.jobs: list[tuple[object, object]] = []
        self.cancelled = 0

    def submit(self, spec, sink):
        self.jobs.append((spec, sink))

        def cancel() -> None:
            self.cancelled += 1

        return cancel


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


def test_combination_builder_weights_remove_and_render(qtbot, controller) -> None:
    from fvdesk.gui.qt_combination import CombinationBuilder

    sink = object()
    w = CombinationBuilder(controller.submit, lambda spec: sink)
    qtbot.addWidget(w)
    assert w.render() is None and not w.render_button.isEnabled()  # nothing to render yet
    w.add_term(L, 1)
    w.add_term(L, 4, weight=0.5)
    w.add_term(L, 7, "neuron", x=2, y=3)
    w.add_term("/classifier/Gemm", 2, "logit")
    w.table.cellWidget(2, 2).setValue(-1.25)  # any real weight, negative subtracts
    w.table.cellWidget(3, 3).click()  # remove the logit term
    assert [t.unit for t in w.terms()] == [1, 4, 7]
    assert [t.weight for t in w.terms()] == [1.0, 0.5, -1.25]
    back = parse_objective(w.expression.text())
    assert [(t.layer, t.unit, t.weight, t.x, t.y) for t in back] == [
        (t.layer, t.unit, t.weight, t.x, t.y) for t in w.terms()
    ]
    w.negative.setChecked(True)
    w.render_button.click()
    spec, got_sink = controller.jobs[-1]
    assert isinstance(spec, CombinationJob) and spec.negative and got_sink is sink
    assert spec.terms == w.terms()
    w.clear()
    w.add_term(L, 3, weight=-2.0)
    assert parse_objective(w.expression.text())[0].weight == -2.0


def test_neuron_position_picker_clicks_and_keys(qtbot, controller) -> None:
    from fvdesk.gui.qt_position import NeuronPositionPicker

    w = NeuronPositionPicker(controller.submit, lambda spec: None)
    qtbot.addWidget(w)
    w.resize(300, 300)
    w.show()
    assert not w.render_button.isEnabled()
    w.set_unit(L, 5, (16, 12))  # height 16, width 12
    assert w.position() == (6, 8)  # the centre, the engine's default
    rect = w.grid.cell_rect(9, 2)
    qtbot.mouseClick(w.grid, Qt.MouseButton.LeftButton, pos=rect.center())
    assert w.position() == (9, 2)
    w.grid.setFocus()
    qtbot.keyClick(w.grid, Qt.Key.Key_Right)
    qtbot.keyClick(w.grid, Qt.Key.Key_Down)
    assert w.position() == (10, 3)
    for _ in range(5):
        qtbot.keyClick(w.grid, Qt.Key.Key_Right)
    assert w.position() == (11, 3)  # clamped to the grid
    added = []
    w.add_to_combination.connect(lambda *a: added.append(a))
    w.add_button.click()
    assert added == [(L, 5, 11, 3)]
    w.render_button.click()
    spec = controller.jobs[-1][0]
    assert (spec.kind, spec.units, spec.x, spec.y) == ("neuron", (5,), 11, 3)
    w.set_unit("/classifier/Gemm", 2, None)  # a vector has no grid
    assert not w.render_button.isEnabled()


def test_direction_dialog_random_file_and_errors(qtbot, tmp_path) -> None:
    from fvdesk.gui.qt_direction import DirectionDialog

    d = DirectionDialog(L, 64)
    qtbot.addWidget(d)
    d.count.setValue(3)
    d.seed.setValue(10)
    d.accept()
    assert isinstance(d.result_spec, DirectionJob) and d.result_spec.seeds == (10, 11, 12)
    np.save(tmp_path / "short.npy", np.ones(5))
    d2 = DirectionDialog(L, 64)
    qtbot.addWidget(d2)
    d2.from_file.setChecked(True)
    d2.path.setText(str(tmp_path / "short.npy"))
    d2.accept()
    assert d2.result_spec is None and "5 values" in d2.error.text()  # stays open, says why
    np.save(tmp_path / "two.npy", np.random.default_rng(0).normal(size=(2, 64)))
    d2.path.setText(str(tmp_path / "two.npy"))
    d2.accept()
    assert len(d2.result_spec.vectors) == 2 and d2.error.text() == ""


def test_interpolation_dialog(qtbot) -> None:
    from fvdesk.gui.qt_direction import InterpolationDialog

    d = InterpolationDialog(f"{L}:1", "nonsense")
    qtbot.addWidget(d)
    d.accept()
    assert d.result_spec is None and "Cannot read" in d.error.text()
    d.b.setText(f"{L}:5 + 0.5*{L}:9")
    d.frames.setValue(5)
    d.shared.setChecked(False)
    d.accept()
    spec = d.result_spec
    assert isinstance(spec, InterpolationJob) and spec.frames == 5 and not spec.shared
    assert [t.unit for t in spec.b] == [5, 9]


def _result(slot: int, value: float) -> UnitResult:
    img = np.full((8, 8, 3), 40 * slot, np.uint8)
    return UnitResult(L, 3, slot, "fam", "spectrum", False, value, img, False, 0, 4, slot=slot,
                      caption=f"v{slot}")  # fmt: skip


def test_figure_view_routes_events_by_slot_and_cancels(qtbot, controller) -> None:
    from fvdesk.core.optim.settings import RenderSettings
    from fvdesk.gui.qt_figures import FigureView, show_spectrum

    v = FigureView(controller.submit)
    qtbot.addWidget(v)
    spec = show_spectrum(v, (Term(L, 3),), RenderSettings())
    assert controller.jobs[-1] == (spec, v) and "prior" not in spec.variants
    tiles = v.tiles.tiles()
    assert [t.caption for t in tiles][:2] == ["Unregularized", "Total variation"]
    assert all(t.state == QUEUED for t in tiles)
    v.feed(StepEvent(2, 4, -1.0, np.array([0.5]), slots=(3,), offset=3))
    v.feed(PreviewEvent(2, np.zeros((1, 8, 8, 3), np.uint8), slots=(3,), offset=3))
    assert tiles[3].state == RUNNING and tiles[3].step == 2 and tiles[3].image is not None
    assert tiles[2].state == QUEUED
    v.feed(UnitDoneEvent(_result(3, 1.5)))
    assert tiles[3].state == DONE and tiles[3].value == 1.5 and tiles[3].array is not None
    v.cancel_button.click()
    assert controller.cancelled == 1
    v.finished(JobResult([_result(3, 1.5)], True, 0.1, "cpu"))
    assert tiles[2].state == "cancelled" and tiles[3].state == DONE
    assert [r.slot for r in v.results()] == [3] and not v.busy()
    prior = show_spectrum(v, (Term(L, 3),), RenderSettings(prior="g.onnx"))
    assert prior.variants[-1] == "prior" and v.tiles.rowCount() == len(prior.variants)
    v.failed("The model is gone.")
    assert v.status.text() == "The model is gone."


def test_settings_dock_has_the_new_settings(qtbot) -> None:
    from fvdesk.gui.qt_settings import RenderSettingsPanel, to_render_settings

    p = RenderSettingsPanel()
    qtbot.addWidget(p)
    chosen = []
    p.file_chosen.connect(lambda k, path: chosen.append((k, path)))
    p.set_values({"bilateral_every": 4, "grad_blur": 1.5, "lap_levels": 3, "octaves": 2,
                  "optimizer": "linf", "param": "maco"})  # fmt: skip
    s = to_render_settings(p.values())
    assert (s.bilateral_every, s.grad_blur, s.lap_levels, s.octaves) == (4, 1.5, 3, 2)
    assert s.optimizer == "linf" and s.param == "maco" and s.maco_spectrum is None
    p.widgets["prior"].choose("/models/gen.onnx")
    assert chosen == [("prior", "/models/gen.onnx")]
    p.set_values({"param": "prior", "bilateral_every": 0, "octaves": 1})
    assert to_render_settings(p.values()).prior == "/models/gen.onnx"
    p.set_value("octaves", 3)  # a generator's size is fixed: the dock's values are refused
    with pytest.raises(ConfigError, match="octaves"):
        to_render_settings(p.values())
    texts = [
        w.text()
        for w in p.findChildren(type(p.preset_info))
        if w.objectName() == "settingExplanation"
    ]
    assert any("Tyka" in t for t in texts) and any("Øygard" in t for t in texts)


def test_job_runner_renders_off_the_gui_thread(qtbot, demo_model_path, monkeypatch) -> None:
    from fvdesk.core.model.loader import load_model
    from fvdesk.core.optim import run as run_mod
    from fvdesk.core.optim.settings import RenderSettings
    from fvdesk.gui.qt_figures import FigureView, show_steepest
    from fvdesk.gui.qt_jobrunner import JobRunner

    model = load_model(demo_model_path, check_parity=False)
    threads = []
    real = run_mod.run_job

    def spy(*a, **k):
        threads.append(threading.current_thread())
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "run_job", spy)
    runner = JobRunner(lambda: model, lambda: RenderSettings(steps=2, size=16))
    v = FigureView(runner.submit)
    qtbot.addWidget(v)
    with qtbot.waitSignal(v.job_finished, timeout=120_000):
        show_steepest(v, (Term(L, 3),))
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert [t.state for t in v.tiles.tiles()] == [DONE] * 6
    assert isinstance(v.spec, SteepestJob) and len(v.results()) == 6
    assert v.results()[4].provenance["job"]["type"] == "steepest"
    assert runner.shutdown()
    nothing = JobRunner(lambda: None, RenderSettings)
    failed = []
    v.job_failed.connect(failed.append)
    v.run(SpectrumJob((Term(L, 3),)))  # the runner has shut down: one sentence, no crash
    v._submit = nothing.submit
    v.run(SpectrumJob((Term(L, 3),)))
    assert failed == ["The renderer has shut down.", "Open a model first."]
