"""The app's parts for the article (pytest-qt): combination builder, neuron position picker and
direction/interpolation dialogs in isolation, the settings dock's new fields, and the spectrum
row, steepest-descent view and interpolation as strips of tiles through the job controller."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.jobs import (
    CombinationJob,
    DirectionJob,
    InterpolationJob,
    Term,
    parse_objective,
)
from fvdesk.gui.qt_tiles import DONE

L = "/features/block3/relu/Relu"


class FakeController:
    """``submit(spec)`` that records instead of rendering."""

    def __init__(self) -> None:
        self.jobs: list[object] = []

    def submit(self, spec):
        self.jobs.append(spec)
        return spec


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


def test_combination_builder_weights_remove_and_render(qtbot, controller) -> None:
    from fvdesk.gui.qt_combination import CombinationBuilder

    w = CombinationBuilder(controller.submit)
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
    spec = controller.jobs[-1]
    assert isinstance(spec, CombinationJob) and spec.negative
    assert spec.terms == w.terms()
    w.clear()
    w.add_term(L, 3, weight=-2.0)
    assert parse_objective(w.expression.text())[0].weight == -2.0


def test_neuron_position_picker_clicks_and_keys(qtbot, controller) -> None:
    from fvdesk.gui.qt_position import NeuronPositionPicker

    w = NeuronPositionPicker(controller.submit)
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
    spec = controller.jobs[-1]
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


def test_figures_render_as_strips_through_the_job_controller(qtbot, demo_window) -> None:
    from fvdesk.core.optim.variants import SPECTRUM
    from fvdesk.gui.qt_article import spectrum_spec, steepest_spec
    from fvdesk.gui.qt_settings import to_render_settings
    from tests.gui_support import fast_settings, wait_idle

    w = demo_window
    fast_settings(w, steps=2, size=16)
    w.resize(1600, 800)
    w.jobs.render_units(L, [0])
    settings = to_render_settings(w.settings_panel.values())
    row = w.jobs.submit(spectrum_spec((Term(L, 3),), settings))
    view = w.jobs.submit(steepest_spec((Term(L, 3),)))
    frames = w.jobs.submit(InterpolationJob((Term(L, 1),), (Term(L, 5),), frames=3))
    tiles = w.tiles.tiles()
    n = len(SPECTRUM) - 1  # no generator: no learned-prior tile
    assert [t.row for t in tiles] == [0] + [row.id] * n + [view.id] * 6 + [frames.id] * 3
    assert [t.caption for t in tiles[1:3]] == ["Unregularized", "Total variation"]
    assert tiles[1 + n].caption == "L2 (pixels) step" and tiles[-1].caption == "t=1.00"
    lines = w.tile_view.lines()  # every figure starts a line of its own (wrapping if long)
    assert lines[0] == [0] and all(len({tiles[i].row for i in line}) == 1 for line in lines)
    wait_idle(qtbot, w)
    assert all(t.state == DONE for t in tiles), [(t.caption, t.state, t.message) for t in tiles]
    assert tiles[1].result.provenance["job"]["type"] == "spectrum"
    steps = [t.array for t in tiles[1 + n : 4 + n]]
    assert all(a is not None and a.shape == (16, 16, 3) for a in steps)
