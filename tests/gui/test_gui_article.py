"""The app's parts for the article (pytest-qt): combination builder, neuron position picker and
direction/interpolation dialogs in isolation, the settings dock's new fields, and the spectrum
row, steepest-descent view and interpolation as strips of tiles through the job controller.

Then the same parts wired into the real window (``ArticleController``): the Figures actions on
the tree's selection, the Combination and Neuron Position docks, the dialogs answered as a user
would, the settings dock's generator file checked off the GUI thread, and a saved spectrum row
reproduced by ``fvdesk render --from``.  Renders are of a few steps on a tiny canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from fvdesk.core.errors import ConfigError
from fvdesk.core.jobs.job import (
    CombinationJob,
    DirectionJob,
    InterpolationJob,
    Term,
    parse_objective,
)
from fvdesk.gui.canvas.tiles import DONE

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
    from fvdesk.gui.article.combination import CombinationBuilder

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
    from fvdesk.gui.article.position import NeuronPositionPicker

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
    from fvdesk.gui.article.direction import DirectionDialog

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
    from fvdesk.gui.article.direction import InterpolationDialog

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
    from fvdesk.gui.settings.panel import RenderSettingsPanel, to_render_settings

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
    from fvdesk.gui.article.figures import spectrum_spec, steepest_spec
    from fvdesk.gui.settings.panel import to_render_settings
    from tests.gui.support import fast_settings, wait_idle

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


# ------------------------------------------------------------------------------------------------
# wired into the window
# ------------------------------------------------------------------------------------------------
LOGITS = "/classifier/Gemm"


def select_units(w, layer: str, *units: int) -> None:
    """Select ``units`` of ``layer`` in the layer tree (as ctrl-clicks do)."""
    w.layers.select_units(layer, units)
    assert [(r.layer.name, r.unit) for r in w.layers.selected_refs()] == [(layer, u) for u in units]


def answer_dialog(fill) -> list:
    """Call ``fill(dialog)`` on the modal dialog an action is about to open; what it saw."""
    from tests.gui.support import when_modal

    seen: list = []

    def answer(d) -> None:
        seen.append(d)
        fill(d)
        if d.isVisible():  # refused: never leave the test waiting on a modal loop
            seen.append(d.error.text())
            d.reject()

    when_modal(answer)
    return seen


def test_spectrum_action_row_saves_and_reproduces_with_render_from(
    qtbot, demo_window, tmp_path, capsys
) -> None:
    from fvdesk.cli import main
    from fvdesk.core.optim.variants import SPECTRUM
    from fvdesk.core.output.gallery import read_gallery
    from tests.gui.support import fast_settings, wait_idle

    w = demo_window
    fast_settings(w, steps=2, size=16)
    act = w.actions_by_key["spectrum"]
    w.layers.select(L)  # a layer is not one unit
    assert not act.isEnabled()
    w.layers.select(LOGITS, 4)
    assert act.isEnabled()
    act.trigger()
    tiles = w.tiles.tiles()
    row = [v for v in SPECTRUM if v.key != "prior"]  # no generator: no learned-prior tile
    assert [t.caption for t in tiles] == [v.caption for v in row]
    assert len({t.row for t in tiles}) == 1 and tiles[0].row != 0  # one strip of its own
    assert w.tile_view.lines()[0][0] == 0
    wait_idle(qtbot, w)
    assert all(t.state == DONE for t in tiles), [(t.caption, t.message) for t in tiles]
    for t, v in zip(tiles, row, strict=True):
        prov = t.result.provenance
        assert prov["job"]["type"] == "spectrum" and prov["job"]["terms"][0]["unit"] == 4
        assert prov["job"]["variants"][prov["slot"]] == v.key
    folder = tmp_path / "spectrum"
    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.galleries.save_gallery(folder)
    pairs = read_gallery(folder)[1]
    assert sorted(item.caption for item, _ in pairs) == sorted(v.caption for v in row)
    last = len(pairs) - 1
    capsys.readouterr()
    code = main(["render", "--from", str(folder / "gallery.json"), "--item", "0",
                 "--item", str(last), "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and out.count("identical to the saved image") == 2, out
    # reopened, the row comes back as a strip of its own (not wrapped into the grid)
    with qtbot.waitSignal(w.galleries.opened, timeout=60_000):
        w.galleries.open_gallery(folder)
    opened = w.tiles.tiles()[len(tiles) :]
    assert sorted(t.caption for t in opened) == sorted(v.caption for v in row)
    assert len({t.row for t in opened}) == 1 and opened[0].row not in (0, tiles[0].row)
    lines = w.tile_view.lines()
    every = w.tiles.tiles()
    assert all(len({every[i].row for i in line}) == 1 for line in lines)  # no mixed line
    assert any(line[0] == len(tiles) for line in lines)  # the reopened strip starts a line


def test_steepest_action_and_the_tree_menu_offer_the_figures(qtbot, demo_window) -> None:
    from fvdesk.gui.shell.menus import tree_menu
    from tests.gui.support import fast_settings, wait_idle

    w = demo_window
    fast_settings(w, steps=2, size=16)
    w.layers.select(L, 3)
    w.actions_by_key["steepest"].trigger()
    tiles = w.tiles.tiles()
    assert len(tiles) == 6 and len({t.row for t in tiles}) == 1
    assert [t.caption for t in tiles[:3]] == ["L2 (pixels) step", "L∞ (sign) step",
                                              "Decorrelated Fourier step"]  # fmt: skip
    wait_idle(qtbot, w)
    assert all(t.state == DONE and t.kind == "steepest" for t in tiles)
    ref = w.layers.selected_refs()[0]
    texts = [a.text() for a in tree_menu(w, ref, w.jobs, w.article).actions()]
    for text in ("Regularization Spectrum", "Steepest Descent View", "Interpolate…",
                 "Pick Neuron Position…", "Add to Combination"):  # fmt: skip
        assert text in texts
    w.layers.select(L)
    layer_menu = tree_menu(w, w.layers.selected_refs()[0], w.jobs, w.article)
    assert "Render Directions…" in [a.text() for a in layer_menu.actions()]


def test_combination_dock_subtracts_and_the_gallery_records_the_terms(
    qtbot, demo_window, tmp_path
) -> None:
    from fvdesk.core.output.gallery import read_gallery
    from tests.gui.support import fast_settings, wait_idle

    w = demo_window
    builder = w.article.builder
    assert w.combination_dock.widget() is builder
    assert not w.actions_by_key["render_combination"].isEnabled()
    select_units(w, L, 1, 4)
    w.actions_by_key["add_combination"].trigger()
    assert [t.unit for t in builder.terms()] == [1, 4]
    assert w.actions_by_key["render_combination"].isEnabled()
    builder.table.cellWidget(1, 2).setValue(-0.5)  # the dock's weight: subtract unit 4
    assert builder.expression.text() == f"{L}:1 - 0.5*{L}:4"
    builder.render_button.click()
    (tile,) = w.tiles.tiles()
    wait_idle(qtbot, w)
    assert tile.state == DONE and tile.kind == "combination" and tile.array.std() > 5
    with qtbot.waitSignal(w.galleries.saved, timeout=60_000):
        w.galleries.save_gallery(tmp_path / "g")
    ((item, _),) = read_gallery(tmp_path / "g")[1]
    terms = item.provenance["job"]["terms"]
    assert [(t["layer"], t["unit"], t["weight"]) for t in terms] == [(L, 1, 1.0), (L, 4, -0.5)]
    fast_settings(w, steps=2, size=16)
    w.actions_by_key["spectrum_combination"].trigger()  # the dock's sum as a spectrum row
    row = w.tiles.tiles()[1:]
    assert len(row) > 10 and {t.spec.terms for t in row} == {builder.terms()}
    wait_idle(qtbot, w)
    assert all(t.state == DONE for t in row)
    w.actions_by_key["clear_combination"].trigger()
    assert not builder.terms() and not w.actions_by_key["render_combination"].isEnabled()


def test_position_picker_follows_the_tree_and_its_neuron_reaches_the_job(
    qtbot, demo_window
) -> None:
    from tests.gui.support import wait_idle

    w = demo_window
    picker = w.article.picker
    w.layers.select(L, 5)
    spatial = w.model.graph[L].spatial
    assert (picker.layer, picker.unit) == (L, 5) and picker.render_button.isEnabled()
    assert (picker.grid.grid_h, picker.grid.grid_w) == spatial
    w.actions_by_key["pick_position"].trigger()
    assert w.position_dock.isVisibleTo(w)
    picker.resize(300, 300)
    qtbot.mouseClick(
        picker.grid, Qt.MouseButton.LeftButton, pos=picker.grid.cell_rect(2, 3).center()
    )
    assert picker.position() == (2, 3)
    picker.render_button.click()
    (tile,) = w.tiles.tiles()
    spec = tile.spec
    assert (spec.kind, spec.units, spec.x, spec.y) == ("neuron", (5,), 2, 3)
    wait_idle(qtbot, w)
    assert tile.state == DONE
    job = tile.result.provenance["job"]
    assert (job["kind"], job["x"], job["y"]) == ("neuron", 2, 3)
    picker.add_button.click()  # "add to combination": a neuron term
    (term,) = w.article.builder.terms()
    assert (term.layer, term.unit, term.kind, term.x, term.y) == (L, 5, "neuron", 2, 3)
    w.layers.select(LOGITS, 2)  # a vector: no positions
    assert not picker.render_button.isEnabled()
    assert not w.actions_by_key["pick_position"].isEnabled()


def test_direction_and_interpolation_dialogs_submit_and_render(qtbot, demo_window) -> None:
    from tests.gui.support import fast_settings, wait_idle

    w = demo_window
    fast_settings(w, steps=2, size=16)
    w.layers.select(L)

    def directions(d) -> None:
        d.count.setValue(2)
        d.seed.setValue(7)
        d.accept()

    seen = answer_dialog(directions)
    w.actions_by_key["directions"].trigger()
    assert len(seen) == 1, seen
    select_units(w, L, 1, 5)

    def frames(d) -> None:
        assert (d.a.text(), d.b.text()) == (f"{L}:1", f"{L}:5")
        d.frames.setValue(4)
        d.accept()

    seen = answer_dialog(frames)
    w.actions_by_key["interpolate"].trigger()
    assert len(seen) == 1, seen
    tiles = w.tiles.tiles()
    first, second = tiles[0].spec, tiles[-1].spec
    assert isinstance(first, DirectionJob) and first.seeds == (7, 8) and first.layer == L
    assert isinstance(second, InterpolationJob) and second.frames == 4
    assert [t.unit for t in second.a + second.b] == [1, 5]
    assert [t.caption for t in tiles[2:]] == ["t=0.00", "t=0.33", "t=0.67", "t=1.00"]
    assert len({t.row for t in tiles[2:]}) == 1  # the frames on one row of their own
    wait_idle(qtbot, w)
    assert all(t.state == DONE for t in tiles), [(t.caption, t.message) for t in tiles]


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    import torch

    from tests.core.optim.test_article_engine import _export, _TinyGenerator

    folder = tmp_path_factory.mktemp("gen")
    return _export(_TinyGenerator().eval(), torch.zeros(1, 16), folder / "gen.onnx")


def test_generator_file_is_checked_off_the_gui_thread(
    qtbot, demo_window, isolated, generator_file, tmp_path, monkeypatch
) -> None:
    from PySide6.QtWidgets import QFileDialog

    w = demo_window
    panel, article = w.settings_panel, w.article
    field = panel.widgets["prior"]
    panel.set_value("param", "pixel")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (generator_file, ""))
    w.actions_by_key["open_generator"].trigger()
    assert article.checking()  # the window answers while the file loads
    qtbot.waitUntil(lambda: not article.checking(), timeout=60_000)
    assert panel.value("param") == "prior" and field.path() == generator_file
    assert not isolated
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00 not a model")
    field.choose(str(bad))
    qtbot.waitUntil(lambda: not article.checking(), timeout=60_000)
    ((title, message),) = isolated
    assert title == "Cannot Use Generator" and str(bad) in message
    assert "\n" not in message and message.rstrip(".").count(". ") == 0  # one sentence
    assert panel.value("param") == "prior" and field.path() == generator_file  # kept
    panel.widgets["maco_spectrum"].choose(str(bad))
    qtbot.waitUntil(lambda: not article.checking(), timeout=60_000)
    assert isolated[-1][0] == "Cannot Use MACO Spectrum" and str(bad) in isolated[-1][1]
    assert panel.value("maco_spectrum") == ""
    field.choose("")  # no generator: the learned prior cannot stay the parameterization
    assert panel.value("param") == "fourier"
