"""Every command of the window, once, on a loaded model (issue 16), offscreen.

What is covered is discovered, not listed: the window's actions (menus, sub-menus, the toolbar),
the entries of the layer tree's and the tiles' context menus (opened after every step, as a
right-click opens them), the buttons of every dock, and the buttons of the dialogs the steps
open.  Each discovered entry needs a handler in ``HANDLERS`` that triggers it as a user would,
waits for its work and checks what it produced (tiles, a file, a dialog's outcome, a message).
An entry without a handler fails the test ("a new action without a working path fails it"), and
so do a handler whose entry is no longer found, an exception that reaches the log, stderr,
``sys.excepthook`` or a thread's hook, a Qt warning, a failed tile or an error nobody expected,
and any error or failure message that is not one sentence ("internal error" is a bug).

Modal dialogs and context menus are answered by timers (``Run.modal``, ``Run.tree_menu``); file
dialogs return paths made here; a dialog or menu nobody answers is closed and fails the step.
The model is a copy of the demo model opened through File > Open, closed and reopened at the end
(File > Open, Open Demo, Open Recent, Close Model) after renders, dataset passes and galleries:
closing and reopening once crashed the app.  Renders use a few steps on a small canvas
(tests/gui/support.fast_settings); the run takes about half a minute on two cores.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QPoint, Qt, QTimer, QtMsgType  # noqa: E402
from PySide6.QtGui import QAction, QGuiApplication  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QDialog,
    QDockWidget,
    QFileDialog,
    QMenu,
    QMessageBox,
    QPushButton,
    QToolButton,
    QWidget,
)

from fvdesk.gui.canvas.tiles import CANCELLED, DONE, FAILED, QUEUED, RUNNING  # noqa: E402
from fvdesk.gui.runtime.worker import BackgroundCall  # noqa: E402
from tests.gui.support import (  # noqa: E402
    CONV1,
    LOAD_TIMEOUT,
    LOGITS,
    RENDER_TIMEOUT,
    fast_settings,
    when_modal,
)
from tests.images import pattern_folder  # noqa: E402

pytestmark = pytest.mark.slow

BLOCK3 = "/features/block3/relu/Relu"  # 16 x 16 grid at the model's 64 px, 64 units
SETTINGS = {"ui:first_n": 2, "ui:facets": 2}  # with fast_settings: small layers of work
#: Qt warnings of the offscreen platform that say nothing about the app.
BENIGN_QT = ("propagateSizeHints", "This plugin does not support")


# ------------------------------------------------------------------------------------------------
# what the user sees: one sentence
# ------------------------------------------------------------------------------------------------
def one_sentence(text: str) -> bool:
    """A message a user can read: one line, one sentence, never an internal error."""
    t = text.strip()
    return (
        bool(t)
        and "\n" not in t
        and "internal error" not in t.lower()
        and "Traceback" not in t
        and not t.startswith("Unexpected")
        and t.rstrip(".").count(". ") == 0
    )


def norm(text: str) -> str:
    """A menu entry's text without its mnemonic and counts ("Render First N Units")."""
    return re.sub(r"\d+", "N", text.replace("&", "")).strip()


# ------------------------------------------------------------------------------------------------
# discovery: what the window offers
# ------------------------------------------------------------------------------------------------
def action_key(w, act: QAction, where: str) -> str:
    name = act.objectName()
    if name.startswith("action_"):
        return name.removeprefix("action_")
    docks = {d.toggleViewAction(): d for d in w.findChildren(QDockWidget)}
    if act in docks:
        return f"panel:{docks[act].objectName()}"
    if act is w.toolbar.toggleViewAction():
        return f"panel:{w.toolbar.objectName()}"
    if where == "menu_recent" and act.statusTip().endswith(".onnx"):
        return "recent:file"
    return f"{where.removeprefix('menu_')}:{norm(act.text())}"


def window_entries(w) -> dict[str, QAction]:
    """Every command of the menu bar (sub-menus included, dynamic ones filled) and toolbar."""
    found: dict[str, QAction] = {}

    def walk(menu: QMenu) -> None:
        menu.aboutToShow.emit()  # menus filled on demand (Open Recent)
        for act in menu.actions():
            if act.isSeparator():
                continue
            if act.menu() is not None:
                walk(act.menu())
            else:
                found.setdefault(action_key(w, act, menu.objectName()), act)

    for act in w.menuBar().actions():
        walk(act.menu())
    for act in w.toolbar.actions() + w.actions():
        if not act.isSeparator() and act.menu() is None:
            found.setdefault(action_key(w, act, "window"), act)
    return found


def menu_entries(menu: QMenu, prefix: str) -> dict[str, QAction]:
    """The entries of a context menu (window actions by their key, others by their text)."""
    out = {}
    for act in menu.actions():
        if act.isSeparator():  # sections too
            continue
        name = act.objectName()
        key = name.removeprefix("action_") if name.startswith("action_") else norm(act.text())
        out[f"{prefix}:{key}"] = act
    return out


def button_key(b: QWidget, dock: QDockWidget) -> str:
    """A dock's button: its name, or its text (tooltip, action) after the nearest named widget
    between it and the dock's own widget ("settingsDock:setting_prior:…")."""
    if b.objectName() and not b.objectName().startswith("qt_"):
        return f"{dock.objectName()}:{b.objectName()}"
    action = b.defaultAction() if isinstance(b, QToolButton) else None
    text = b.text() or b.toolTip() or (action.objectName() if action else "")
    owner = b.parentWidget()
    while owner is not None and owner is not dock.widget():
        name = owner.objectName()
        if name and not name.startswith("qt_"):
            return f"{dock.objectName()}:{name}:{text}"
        owner = owner.parentWidget()
    return f"{dock.objectName()}:{text}"


def dock_buttons(w) -> dict[str, QWidget]:
    out: dict[str, QWidget] = {}
    for dock in w.findChildren(QDockWidget):
        for b in dock.widget().findChildren(QPushButton) + dock.widget().findChildren(QToolButton):
            out.setdefault(button_key(b, dock), b)
    return out


def dialog_buttons(d: QWidget) -> dict[str, QWidget]:
    """A dialog's buttons (its button box's too) by the dialog's class and their text."""
    out: dict[str, QWidget] = {}
    for b in d.findChildren(QPushButton) + d.findChildren(QToolButton):
        out.setdefault(f"{type(d).__name__}:{norm(b.text() or b.toolTip())}", b)
    return out


def press(d: QWidget, key: str) -> None:
    """Click the button ``key`` ("ZoomDialog:Copy") of dialog ``d``."""
    buttons = dialog_buttons(d)
    assert key in buttons, sorted(buttons)
    assert buttons[key].isEnabled(), f"{key} is disabled"
    buttons[key].click()


# ------------------------------------------------------------------------------------------------
# the run: the window, its fixture files, and what went wrong
# ------------------------------------------------------------------------------------------------
class Recorder(logging.Handler):
    """Log records of WARNING and above, from any logger."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        self.problems.append(f"log {record.levelname} {record.name}: {self.format(record)}")


class Run:
    """The window under test, its fixture files, what was discovered and what went wrong."""

    def __init__(self, qtbot, w, files: dict[str, Path]) -> None:
        self.qtbot, self.w, self.files = qtbot, w, files
        self.seen: dict[str, object] = {}  # key -> the action or button found
        self.problems: list[str] = []
        self.modals: list[str] = []  # titles of the modal dialogs answered
        self.questions: list[str] = []
        self._modal_expected = False  # a step is answering a dialog
        self._menu_expected = False  # a step is answering a context menu
        self._errors = 0  # window.errors checked so far
        self._failed_ok: set[int] = set()  # failed tiles a handler expected
        self._failed_seen: set[int] = set()
        self._qt_seen = 0  # Qt messages checked so far
        self.file_answer = ""  # what the next QFileDialog.getOpenFileName returns
        self.folder_answer = ""  # what the next QFileDialog.getExistingDirectory returns
        self.save_answer = ""  # what the next QFileDialog.getSaveFileName returns

    # -- waiting ----------------------------------------------------------------------------------
    def idle(self) -> bool:
        w = self.w
        return not (
            w.queue.busy()
            or w.session.is_loading()
            or w.galleries.is_saving()
            or w.article.checking()
            or BackgroundCall._live  # a call whose answer has not landed yet
        )

    def settle(self, timeout: int = RENDER_TIMEOUT) -> None:
        self.qtbot.waitUntil(self.idle, timeout=timeout)

    def load(self, trigger: Callable[[], object]) -> object:
        """Trigger a (re)load and wait for the new model."""
        with self.qtbot.waitSignal(self.w.session.loaded, timeout=LOAD_TIMEOUT):
            trigger()
        self.settle(LOAD_TIMEOUT)
        fast_settings(self.w, **SETTINGS)
        return self.w.model

    # -- what a step produced ----------------------------------------------------------------------
    def new_tiles(self, trigger: Callable[[], object], *, state: str = DONE,
                  n: int | None = None) -> list:  # fmt: skip
        """Tiles the trigger added, awaited; all in ``state`` (and ``n`` of them when given)."""
        before = {t.id for t in self.w.tiles.tiles()}
        trigger()
        self.settle()
        tiles = [t for t in self.w.tiles.tiles() if t.id not in before]
        assert tiles, "no tile was made"
        if n is not None:
            assert len(tiles) == n, [t.caption for t in tiles]
        if state == FAILED:
            self._failed_ok.update(t.id for t in tiles)
        bad = [(t.caption, t.state, t.message) for t in tiles if t.state != state]
        assert not bad, bad
        assert all(t.image is not None for t in tiles if state == DONE)
        return tiles

    def take_errors(self) -> list[tuple[str, str]]:
        """The errors shown since the last look (a handler that expects them takes them)."""
        new = self.w.errors[self._errors :]
        self._errors = len(self.w.errors)
        return list(new)

    def log_text(self) -> str:
        return self.w.log_view.toPlainText()

    def status(self) -> str:
        return self.w.statusBar().currentMessage()

    # -- menus and dialogs -------------------------------------------------------------------------
    def record(self, entries: dict[str, object]) -> dict[str, object]:
        for k, v in entries.items():
            self.seen.setdefault(k, v)
        return entries

    def discover(self) -> None:
        """What the window offers now: actions, dock buttons, and its context menus."""
        w = self.w
        self.record(window_entries(w))
        self.record(dock_buttons(w))
        if w.model is not None:
            for layer in (CONV1, LOGITS):
                self.tree_menu(layer)
                self.tree_menu(layer, 0)
        finished = [t for t in w.tiles.tiles() if t.finished]
        if finished:
            self.tile_menu(finished[-1])
        self.tile_menu()

    def _open(self, emit: Callable[[], None], prefix: str, choose: str | None) -> dict[str, bool]:
        """Right-click (``emit`` asks for the menu as a right-click does): the menu's entries
        (key -> enabled), recorded; ``choose``: the entry then picked (Return on it)."""
        got: list[dict[str, bool]] = []

        def answer() -> None:
            menu = QApplication.activePopupWidget()
            if not isinstance(menu, QMenu):
                if self._menu_expected:
                    QTimer.singleShot(20, answer)
                return
            entries = menu_entries(menu, prefix)
            self.record({k: f"{prefix} menu" for k in entries})
            got.append({k: a.isEnabled() for k, a in entries.items()})
            chosen = entries.get(choose) if choose else None
            if chosen is None or not chosen.isEnabled():
                menu.close()
                return
            menu.setActiveAction(chosen)
            QTest.keyClick(menu, Qt.Key.Key_Return)

        self._menu_expected = True
        QTimer.singleShot(0, answer)
        try:
            emit()  # returns once the menu is closed
        finally:
            self._menu_expected = False
        assert got, f"no {prefix} menu ({self.w.model}, {QApplication.activePopupWidget()})"
        if choose is not None:
            assert got[0].get(choose), f"{choose} is not offered, or disabled: {got[0]}"
        return got[0]

    def tree_menu(self, layer: str, unit: int = -1, choose: str | None = None) -> dict[str, bool]:
        """Right-click ``layer`` (or its unit) in the layer tree (and pick ``choose``)."""
        tree = self.w.layers.tree
        self.w.layers.select(layer, unit)
        pos = tree.visualRect(tree.currentIndex()).center()
        ref = self.w.layers.ref_at(tree.indexAt(pos))
        assert ref is not None and ref.layer is not None
        assert (ref.layer.name, ref.unit if unit >= 0 else -1) == (layer, unit), (ref, layer, unit)
        prefix = "tree-unit" if unit >= 0 else "tree-layer"
        return self._open(lambda: tree.customContextMenuRequested.emit(pos), prefix, choose)

    def tile_menu(self, tile=None, choose: str | None = None) -> dict[str, bool]:
        """Right-click a tile (or the canvas beside the tiles) (and pick ``choose``)."""
        view = self.w.tile_view
        if tile is not None:
            index = self.w.tiles.index_of(tile.id)
            view.scrollTo(index)
            pos = view.visualRect(index).center()
        else:
            pos = blank_point(view)
        prefix = "tile" if tile is not None else "canvas"
        return self._open(lambda: view.customContextMenuRequested.emit(pos), prefix, choose)

    def modal(self, trigger: Callable[[], object], answer: Callable[[QDialog], object]) -> list:
        """Trigger something that opens a modal dialog; ``answer(dialog)`` runs once it is up
        (it should accept or reject it; a dialog still open afterwards is rejected)."""
        seen: list[QDialog] = []
        self._modal_expected = True

        def respond(d: QDialog) -> None:
            seen.append(d)
            self.modals.append(d.windowTitle())
            self.record(dialog_buttons(d))
            try:
                answer(d)
            finally:
                if d.isVisible():
                    d.reject()
                self._modal_expected = False

        when_modal(respond)
        try:
            trigger()
        finally:
            self._modal_expected = False
        assert seen, "no modal dialog was opened"
        return seen

    def close_strays(self) -> None:
        """A modal dialog or a menu that no step is answering: closed, and a problem."""
        d = QApplication.activeModalWidget()
        if d is not None and not self._modal_expected:
            self.problems.append(f"a dialog nobody expected: {d.windowTitle()!r}")
            d.close()
        menu = QApplication.activePopupWidget()
        if menu is not None and not self._menu_expected:
            self.problems.append(f"a menu nobody expected: {menu!r}")
            menu.close()


# ------------------------------------------------------------------------------------------------
# the handlers, in the order they run
# ------------------------------------------------------------------------------------------------
Handler = Callable[[Run], None]
HANDLERS: dict[str, Handler] = {}


def handles(*keys: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for k in keys:
            assert k not in HANDLERS, k
            HANDLERS[k] = fn
        return fn

    return register


def act(r: Run, key: str) -> None:
    a = r.seen[key]
    assert isinstance(a, QAction) and a.isEnabled(), f"{key} is disabled"
    a.trigger()


def click(r: Run, key: str) -> None:
    b = r.seen[key]
    assert b.isEnabled(), f"{key} is disabled"
    b.click()


# -- rendering from the selection ------------------------------------------------------------------
@handles("render_selected")
def _render_selected(r: Run) -> None:
    r.w.layers.select(CONV1, 3)
    (t,) = r.new_tiles(lambda: act(r, "render_selected"))
    assert (t.layer, t.unit) == (CONV1, 3)


@handles("render_facets")
def _render_facets(r: Run) -> None:
    r.w.layers.select(CONV1, 1)
    tiles = r.new_tiles(lambda: act(r, "render_facets"), n=2)
    assert sorted(t.facet for t in tiles) == [0, 1]


@handles("render_negative")
def _render_negative(r: Run) -> None:
    r.w.layers.select(CONV1, 2)
    (t,) = r.new_tiles(lambda: act(r, "render_negative"))
    assert t.negative


@handles("render_first")
def _render_first(r: Run) -> None:
    r.w.layers.select(BLOCK3)
    tiles = r.new_tiles(lambda: act(r, "render_first"), n=2)
    assert [t.unit for t in tiles] == [0, 1]


@handles("render_all")
def _render_all(r: Run) -> None:
    r.w.layers.select(LOGITS)
    tiles = r.new_tiles(lambda: act(r, "render_all"), n=8)
    assert all(t.label for t in tiles)  # class names on the logits


@handles("deepdream")
def _deepdream(r: Run) -> None:
    r.w.layers.select(CONV1)
    (t,) = r.new_tiles(lambda: act(r, "deepdream"))
    assert t.kind == "deepdream"


# -- the article's figures -------------------------------------------------------------------------
@handles("spectrum")
def _spectrum(r: Run) -> None:
    r.w.layers.select(BLOCK3, 4)
    tiles = r.new_tiles(lambda: act(r, "spectrum"))
    assert len(tiles) >= 3 and len({t.row for t in tiles}) == 1  # one row


@handles("steepest")
def _steepest(r: Run) -> None:
    r.w.layers.select(BLOCK3, 4)
    assert len(r.new_tiles(lambda: act(r, "steepest"))) >= 3


@handles("pick_position")
def _pick_position(r: Run) -> None:
    w = r.w
    w.layers.select(BLOCK3, 6)
    w.position_dock.hide()
    act(r, "pick_position")
    assert w.position_dock.isVisible()
    picker = w.article.picker
    assert (picker.layer, picker.unit) == (BLOCK3, 6)
    assert (picker.grid.grid_h, picker.grid.grid_w) == w.model.graph[BLOCK3].spatial


@handles("directions", "DirectionDialog:Render", "DirectionDialog:Cancel", "DirectionDialog:…")
def _directions(r: Run) -> None:
    r.w.layers.select(BLOCK3)

    def random(d: QDialog) -> None:
        d.count.setValue(2)
        press(d, "DirectionDialog:Render")

    tiles = r.new_tiles(lambda: r.modal(lambda: act(r, "directions"), random), n=2)
    assert [t.spec.seeds for t in tiles[:1]] == [(0, 1)]
    before = r.w.tiles.rowCount()
    r.modal(lambda: act(r, "directions"), lambda d: press(d, "DirectionDialog:Cancel"))
    assert r.w.tiles.rowCount() == before  # cancelled: nothing rendered
    vectors = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    np.save(r.files["directions"], vectors)
    r.file_answer = str(r.files["directions"])

    def from_file(d: QDialog) -> None:
        press(d, "DirectionDialog:…")
        assert d.from_file.isChecked() and d.path.text() == r.file_answer
        press(d, "DirectionDialog:Render")

    tiles = r.new_tiles(lambda: r.modal(lambda: act(r, "directions"), from_file), n=2)
    assert np.allclose(tiles[1].spec.vectors[1], vectors[1])


@handles("interpolate", "InterpolationDialog:Render", "InterpolationDialog:Cancel")
def _interpolate(r: Run) -> None:
    r.w.layers.select_units(BLOCK3, (1, 5))

    def answer(d: QDialog) -> None:
        assert (d.a.text(), d.b.text()) == (f"{BLOCK3}:1", f"{BLOCK3}:5")
        d.frames.setValue(3)
        press(d, "InterpolationDialog:Render")

    r.new_tiles(lambda: r.modal(lambda: act(r, "interpolate"), answer), n=3)
    before = r.w.tiles.rowCount()
    r.modal(lambda: act(r, "interpolate"), lambda d: press(d, "InterpolationDialog:Cancel"))
    assert r.w.tiles.rowCount() == before


# -- the combination -------------------------------------------------------------------------------
@handles("add_combination")
def _add_combination(r: Run) -> None:
    r.w.layers.select_units(BLOCK3, (2, 3))
    act(r, "add_combination")
    terms = r.w.article.builder.terms()
    assert [(t.layer, t.unit) for t in terms] == [(BLOCK3, 2), (BLOCK3, 3)]
    r.discover()  # the terms' remove buttons


@handles("render_combination", "combinationDock:Render Combination")
def _render_combination(r: Run) -> None:
    (t,) = r.new_tiles(lambda: act(r, "render_combination"))
    assert t.kind == "combination"
    (t,) = r.new_tiles(lambda: click(r, "combinationDock:Render Combination"))  # the same
    assert t.kind == "combination" and t.spec == r.w.tiles.tiles()[-2].spec


@handles("spectrum_combination")
def _spectrum_combination(r: Run) -> None:
    assert len(r.new_tiles(lambda: act(r, "spectrum_combination"))) >= 3


@handles("combinationDock:×")
def _remove_term(r: Run) -> None:
    builder = r.w.article.builder
    n = len(builder.terms())
    rm = builder.table.cellWidget(0, 3)
    assert isinstance(rm, QToolButton) and rm is not None
    rm.click()
    assert len(builder.terms()) == n - 1


@handles("combinationDock:Clear")
def _combination_clear(r: Run) -> None:
    click(r, "combinationDock:Clear")
    assert not r.w.article.builder.terms()


@handles("clear_combination")
def _clear_combination(r: Run) -> None:
    r.w.article.add_units([(BLOCK3, 1)])
    act(r, "clear_combination")
    assert not r.w.article.builder.terms()
    assert not r.w.actions_by_key["render_combination"].isEnabled()


# -- the neuron position dock ----------------------------------------------------------------------
@handles("positionDock:Render Neuron")
def _render_neuron(r: Run) -> None:
    w = r.w
    picker = w.article.picker
    w.layers.select(BLOCK3, 6)
    picker.grid.set_position(3, 4)
    (t,) = r.new_tiles(lambda: click(r, "positionDock:Render Neuron"))
    assert (t.spec.kind, t.spec.x, t.spec.y) == ("neuron", 3, 4)
    # the grid is the layer's at the model's 64 px; on a 32 px canvas the corner is off the
    # layer's grid: one sentence on the tile and in the log, no internal error
    picker.grid.set_position(15, 15)
    (t,) = r.new_tiles(lambda: click(r, "positionDock:Render Neuron"), state=FAILED)
    assert one_sentence(t.message) and "15" in t.message, t.message
    assert t.message in r.log_text()


@handles("positionDock:Add to Combination")
def _neuron_to_combination(r: Run) -> None:
    w = r.w
    w.layers.select(BLOCK3, 6)
    w.article.picker.grid.set_position(2, 2)
    click(r, "positionDock:Add to Combination")
    (t,) = w.article.builder.terms()
    assert (t.kind, t.x, t.y) == ("neuron", 2, 2)
    w.article.builder.clear()


# -- the layer tree's menus ------------------------------------------------------------------------
@handles("tree-unit:Render")
def _tree_render(r: Run) -> None:
    (t,) = r.new_tiles(lambda: r.tree_menu(CONV1, 5, choose="tree-unit:Render"))
    assert t.unit == 5


@handles("tree-unit:Render N Diverse Facets")
def _tree_facets(r: Run) -> None:
    r.new_tiles(lambda: r.tree_menu(CONV1, 5, choose="tree-unit:Render N Diverse Facets"), n=2)


@handles("tree-unit:Render Negative")
def _tree_negative(r: Run) -> None:
    (t,) = r.new_tiles(lambda: r.tree_menu(CONV1, 5, choose="tree-unit:Render Negative"))
    assert t.negative


@handles("tree-unit:Render as Probability", "tree-unit:Render as Logit")
def _tree_class_kinds(r: Run) -> None:
    (t,) = r.new_tiles(lambda: r.tree_menu(LOGITS, 2, choose="tree-unit:Render as Probability"))
    assert t.kind == "prob"
    r.w.settings_panel.set_value("ui:class_kind", "prob")
    try:
        (t,) = r.new_tiles(lambda: r.tree_menu(LOGITS, 2, choose="tree-unit:Render as Logit"))
        assert t.kind == "logit"
    finally:
        r.w.settings_panel.set_value("ui:class_kind", "logit")


@handles("tree-unit:Regularization Spectrum")
def _tree_spectrum(r: Run) -> None:
    tiles = r.new_tiles(lambda: r.tree_menu(LOGITS, 1, choose="tree-unit:Regularization Spectrum"))
    assert len(tiles) >= 3


@handles("tree-unit:Steepest Descent View")
def _tree_steepest(r: Run) -> None:
    tiles = r.new_tiles(lambda: r.tree_menu(CONV1, 2, choose="tree-unit:Steepest Descent View"))
    assert len(tiles) >= 3


@handles("tree-unit:Interpolate…")
def _tree_interpolate(r: Run) -> None:
    def answer(d: QDialog) -> None:
        assert d.a.text() == f"{CONV1}:2" and not d.b.text()
        d.b.setText(f"{CONV1}:3")
        d.frames.setValue(2)
        d.accept()

    pick = lambda: r.tree_menu(CONV1, 2, choose="tree-unit:Interpolate…")  # noqa: E731
    r.new_tiles(lambda: r.modal(pick, answer), n=2)


@handles("tree-unit:Pick Neuron Position…")
def _tree_pick(r: Run) -> None:
    r.tree_menu(CONV1, 7, choose="tree-unit:Pick Neuron Position…")
    assert (r.w.article.picker.layer, r.w.article.picker.unit) == (CONV1, 7)
    assert r.w.position_dock.isVisible()
    assert not r.tree_menu(LOGITS, 1)["tree-unit:Pick Neuron Position…"]


@handles("tree-unit:Add to Combination", "tree-unit:Subtract in Combination")
def _tree_combination(r: Run) -> None:
    builder = r.w.article.builder
    builder.clear()
    r.tree_menu(CONV1, 1, choose="tree-unit:Add to Combination")
    r.tree_menu(CONV1, 4, choose="tree-unit:Subtract in Combination")
    assert [(t.unit, t.weight) for t in builder.terms()] == [(1, 1.0), (4, -1.0)]
    assert builder.expression.text() == f"{CONV1}:1 - {CONV1}:4"
    builder.clear()


@handles("tree-layer:Render First N Units")
def _tree_first(r: Run) -> None:
    r.new_tiles(lambda: r.tree_menu(BLOCK3, choose="tree-layer:Render First N Units"), n=2)


@handles("tree-layer:Render All N Units (batched)")
def _tree_all(r: Run) -> None:
    r.new_tiles(lambda: r.tree_menu(LOGITS, choose="tree-layer:Render All N Units (batched)"),
                n=8)  # fmt: skip


@handles("tree-layer:DeepDream")
def _tree_deepdream(r: Run) -> None:
    (t,) = r.new_tiles(lambda: r.tree_menu(BLOCK3, choose="tree-layer:DeepDream"))
    assert t.kind == "deepdream"
    assert not r.tree_menu(LOGITS)["tree-layer:DeepDream"]


@handles("tree-layer:Render Directions…")
def _tree_directions(r: Run) -> None:
    def answer(d: QDialog) -> None:
        d.count.setValue(1)
        d.accept()

    pick = lambda: r.tree_menu(CONV1, choose="tree-layer:Render Directions…")  # noqa: E731
    r.new_tiles(lambda: r.modal(pick, answer), n=1)


@handles("tree-layer:Copy Layer Name")
def _tree_copy_name(r: Run) -> None:
    r.tree_menu(BLOCK3, choose="tree-layer:Copy Layer Name")
    assert QGuiApplication.clipboard().text() == BLOCK3


# -- the tiles' menus ------------------------------------------------------------------------------
def blank_point(view) -> QPoint:
    """A point of the canvas beside the tiles."""
    vp = view.viewport()
    for y in range(vp.height() - 2, 0, -24):
        for x in range(vp.width() - 2, 0, -24):
            if not view.indexAt(QPoint(x, y)).isValid():
                return QPoint(x, y)
    raise AssertionError("the tiles cover the canvas")


@contextlib.contextmanager
def long_renders(r: Run, *units: int) -> Iterator[list]:
    """Renders of ``CONV1``'s ``units`` that last until cancelled (the first one running); the
    block waits for them to end."""
    w = r.w
    w.settings_panel.set_value("steps", 20000)
    try:
        for unit in units:
            w.jobs.render_units(CONV1, [unit])
        tiles = w.tiles.tiles()[-len(units) :]
        r.qtbot.waitUntil(lambda: tiles[0].state == RUNNING, timeout=RENDER_TIMEOUT)
        yield tiles
        r.settle()
    finally:
        w.settings_panel.set_value("steps", 6)


def a_unit_tile(r: Run):
    r.w.layers.select(CONV1, 0)
    (t,) = r.new_tiles(lambda: act(r, "render_selected"))
    return t


@handles("tile:zoom_tile")
def _tile_zoom(r: Run) -> None:
    tile = a_unit_tile(r)
    r.tile_menu(tile, choose="tile:zoom_tile")
    (dlg,) = r.w._zooms
    assert dlg.isVisible() and dlg.tile_id == tile.id
    dlg.close()
    r.qtbot.waitUntil(lambda: not r.w._zooms)


@handles("tile:Copy Image")
def _tile_copy(r: Run) -> None:
    tile = a_unit_tile(r)
    r.tile_menu(tile, choose="tile:Copy Image")
    image = QGuiApplication.clipboard().image()
    assert not image.isNull() and image.width() == tile.image.width()


@handles("tile:Show in Layer Tree")
def _tile_show(r: Run) -> None:
    tile = a_unit_tile(r)
    r.w.layers.select(LOGITS)
    r.tile_menu(tile, choose="tile:Show in Layer Tree")
    (ref,) = r.w.layers.selected_refs()
    assert (ref.layer.name, ref.unit) == (tile.layer, tile.unit)


@handles("tile:Render Again (new seed)")
def _tile_again(r: Run) -> None:
    tile = a_unit_tile(r)
    (t,) = r.new_tiles(lambda: r.tile_menu(tile, choose="tile:Render Again (new seed)"))
    assert (t.layer, t.unit) == (tile.layer, tile.unit)
    assert t.settings["seed"] == tile.settings["seed"] + 1
    assert not np.array_equal(t.array, tile.array)


@handles("tile:Regularization Spectrum")
def _tile_spectrum(r: Run) -> None:
    tile = a_unit_tile(r)
    assert len(r.new_tiles(lambda: r.tile_menu(tile, choose="tile:Regularization Spectrum"))) >= 3


@handles("tile:Steepest Descent View")
def _tile_steepest(r: Run) -> None:
    tile = a_unit_tile(r)
    assert len(r.new_tiles(lambda: r.tile_menu(tile, choose="tile:Steepest Descent View"))) >= 3


@handles("tile:Add to Combination")
def _tile_combination(r: Run) -> None:
    tile = a_unit_tile(r)
    r.w.article.builder.clear()
    r.tile_menu(tile, choose="tile:Add to Combination")
    (term,) = r.w.article.builder.terms()
    assert (term.layer, term.unit) == (tile.layer, tile.unit)
    r.w.article.builder.clear()


@handles("tile:Cancel This Job")
def _tile_cancel(r: Run) -> None:
    with long_renders(r, 9) as (tile,):
        r.tile_menu(tile, choose="tile:Cancel This Job")
    assert tile.state == CANCELLED


@handles("tile:remove_tiles")
def _tile_remove(r: Run) -> None:
    tile = a_unit_tile(r)
    r.w.tile_view.setCurrentIndex(r.w.tiles.index_of(tile.id))
    r.tile_menu(tile, choose="tile:remove_tiles")
    assert r.w.tiles.tile(tile.id) is None


@handles("tile:select_all", "canvas:select_all")
def _tile_select_all(r: Run) -> None:
    a_unit_tile(r)
    view = r.w.tile_view
    view.clearSelection()
    r.tile_menu(choose="canvas:select_all")
    assert len(view.selected_tiles()) == r.w.tiles.rowCount()
    view.clearSelection()
    r.tile_menu(r.w.tiles.tiles()[0], choose="tile:select_all")
    assert len(view.selected_tiles()) == r.w.tiles.rowCount()


@handles("tile:clear_tiles", "canvas:clear_tiles")
def _tile_clear(r: Run) -> None:
    r.tile_menu(choose="canvas:clear_tiles")
    assert r.w.tiles.rowCount() == 0
    tile = a_unit_tile(r)
    r.tile_menu(tile, choose="tile:clear_tiles")
    assert r.w.tiles.rowCount() == 0


# -- the edit and view menus -----------------------------------------------------------------------
@handles("select_all")
def _select_all(r: Run) -> None:
    a_unit_tile(r)
    a_unit_tile(r)
    r.w.tile_view.clearSelection()
    act(r, "select_all")
    assert len(r.w.tile_view.selected_tiles()) == r.w.tiles.rowCount() >= 2


@handles("remove_tiles")
def _remove_tiles(r: Run) -> None:
    n = r.w.tiles.rowCount()
    r.w.tile_view.selectAll()
    assert n and len(r.w.tile_view.selected_tiles()) == n
    act(r, "remove_tiles")
    assert r.w.tiles.rowCount() == 0


@handles("zoom_tile", "ZoomDialog:Fit", "ZoomDialog:N×", "ZoomDialog:Copy",
         "ZoomDialog:Save PNG…", "ZoomDialog:Close")  # fmt: skip
def _zoom(r: Run) -> None:
    w = r.w
    tile = a_unit_tile(r)
    w.tile_view.setCurrentIndex(w.tiles.index_of(tile.id))
    act(r, "zoom_tile")
    (dlg,) = w._zooms
    assert dlg.tile_id == tile.id and dlg.isVisible()
    r.record(dialog_buttons(dlg))
    side = tile.image.width()
    zooms = [b for b in dlg.findChildren(QPushButton) if norm(b.text()) == "N×"]
    assert len(zooms) == len(dlg.ZOOMS)
    for b in zooms:
        b.click()
        assert dlg.current_pixmap().width() == int(b.text().rstrip("×")) * side
    press(dlg, "ZoomDialog:Fit")
    assert dlg.current_pixmap().width() >= side
    press(dlg, "ZoomDialog:Copy")
    assert QGuiApplication.clipboard().image().width() == side
    r.save_answer = str(r.files["png"])
    press(dlg, "ZoomDialog:Save PNG…")
    assert r.files["png"].read_bytes().startswith(b"\x89PNG")
    r.save_answer = str(r.files["png"].parent / "no such folder" / "x.png")
    r.files["png"].parent.joinpath("no such folder").write_text("a file, not a folder")
    press(dlg, "ZoomDialog:Save PNG…")  # cannot be written: one sentence, the dialog stays
    ((title, message),) = r.take_errors()
    assert title == "Cannot Save Image" and one_sentence(message), message
    assert dlg.isVisible()
    press(dlg, "ZoomDialog:Close")
    r.qtbot.waitUntil(lambda: not w._zooms)


@handles("bigger_tiles", "smaller_tiles")
def _tile_sizes(r: Run) -> None:
    view = r.w.tile_view
    size = view.tile_size()
    act(r, "bigger_tiles")
    assert view.tile_size() > size
    act(r, "smaller_tiles")
    assert abs(view.tile_size() - size) <= 2


@handles("find")
def _find(r: Run) -> None:
    w = r.w
    w.tree_dock.hide()
    w.layers.filter_edit.setText("block3")
    act(r, "find")
    assert w.tree_dock.isVisible()
    assert w.layers.filter_edit.selectedText() == "block3"


@handles("layersDock:layerFilter:_q_qlineeditclearaction")
def _filter_clear(r: Run) -> None:
    w = r.w
    w.layers.filter_edit.setText("block3")
    w.layers.apply_filter()
    assert w.layers.tree_proxy.rowCount() >= 1
    shown = w.layers.tree_proxy.rowCount()
    click(r, "layersDock:layerFilter:_q_qlineeditclearaction")
    assert w.layers.filter_edit.text() == ""
    r.qtbot.waitUntil(lambda: w.layers.tree_proxy.rowCount() > shown)  # every layer again


@handles(
    "panel:layersDock", "panel:settingsDock", "panel:messagesDock", "panel:examplesDock",
    "panel:layerExamplesDock", "panel:combinationDock", "panel:positionDock", "panel:mainToolBar",
    "panel:inspectDock",
)  # fmt: skip
def _panels(r: Run) -> None:
    w = r.w
    for key in [k for k in HANDLERS if k.startswith("panel:")]:
        a = r.seen[key]
        name = key.removeprefix("panel:")
        widget = w.findChild(QWidget, name)
        was = widget.isVisible()
        a.trigger()
        assert widget.isVisible() != was, key
        a.trigger()
        assert widget.isVisible() == was, key


@handles("reset_layout")
def _reset_layout(r: Run) -> None:
    w = r.w
    w.tree_dock.hide()
    w.combination_dock.setFloating(True)
    act(r, "reset_layout")
    assert w.tree_dock.isVisible() and not w.combination_dock.isFloating()
    assert not w.browser_dock.isVisible()  # shown when a layer is browsed


# -- the settings dock -----------------------------------------------------------------------------
@handles("settingsDock:New")
def _new_seed(r: Run) -> None:
    seed = r.w.settings_panel.value("seed")
    click(r, "settingsDock:New")
    assert r.w.settings_panel.value("seed") != seed


@handles("settingsDock:advancedToggle")
def _advanced(r: Run) -> None:
    section = r.w.settings_panel.advanced
    assert section.body.isHidden()  # closed at first
    click(r, "settingsDock:advancedToggle")
    assert not section.body.isHidden()
    click(r, "settingsDock:advancedToggle")
    assert section.body.isHidden()


@handles("settingsDock:…", "settingsDock:labelsClear")
def _labels(r: Run) -> None:
    w = r.w
    names = [f"pattern {i}" for i in range(8)]
    r.files["labels"].write_text("\n".join(names) + "\n")
    r.file_answer = str(r.files["labels"])
    click(r, "settingsDock:…")
    assert w.session.labels == names and w.session.labels_file == str(r.files["labels"])
    assert w.model.labels != names  # the session's choice, never the model's
    assert (r.files["model"].parent / "demo_copy.fvdesk.json").is_file()  # remembered
    click(r, "settingsDock:labelsClear")
    assert w.session.labels_file == "" and w.session.labels != names


@handles("settingsDock:setting_maco_spectrum:…", "settingsDock:setting_maco_spectrum:×")
def _maco_spectrum(r: Run) -> None:
    from fvdesk.core.optim.maco import default_spectrum_path

    panel = r.w.settings_panel
    r.file_answer = str(default_spectrum_path())
    click(r, "settingsDock:setting_maco_spectrum:…")
    r.settle()
    assert panel.value("maco_spectrum") == r.file_answer
    assert "MACO spectrum" in r.status()
    click(r, "settingsDock:setting_maco_spectrum:×")
    assert panel.value("maco_spectrum") == ""


@handles("open_generator", "settingsDock:setting_prior:…", "settingsDock:setting_prior:×")
def _generator(r: Run) -> None:
    panel = r.w.settings_panel
    r.file_answer = str(r.files["generator"])
    act(r, "open_generator")
    r.settle()
    assert panel.value("prior") == r.file_answer and panel.value("param") == "prior"
    (t,) = r.new_tiles(lambda: r.w.jobs.render_units(CONV1, [0]))  # through the prior
    assert t.settings["param"] == "prior"
    click(r, "settingsDock:setting_prior:×")
    assert panel.value("prior") == "" and panel.value("param") == "fourier"
    click(r, "settingsDock:setting_prior:…")
    r.settle()
    assert panel.value("param") == "prior"
    click(r, "settingsDock:setting_prior:×")
    assert panel.value("param") == "fourier"


@handles("settingsDock:Restore Defaults")
def _restore_defaults(r: Run) -> None:
    panel = r.w.settings_panel
    assert panel.value("steps") == 6
    click(r, "settingsDock:Restore Defaults")
    assert panel.value("steps") == 256
    fast_settings(r.w, **SETTINGS)


# -- galleries and atlases -------------------------------------------------------------------------
@handles("save_gallery")
def _save_gallery(r: Run) -> None:
    w = r.w
    w.jobs.clear_tiles()
    act_enabled = w.actions_by_key["save_gallery"].isEnabled()
    assert not act_enabled  # nothing finished to save
    a_unit_tile(r)
    a_unit_tile(r)
    r.folder_answer = str(r.files["gallery"])
    act(r, "save_gallery")
    r.settle()
    assert (r.files["gallery"] / "gallery.json").is_file()
    assert "Saved a gallery of 2 images" in r.log_text()


@handles("open_gallery")
def _open_gallery(r: Run) -> None:
    r.w.jobs.clear_tiles()
    r.folder_answer = str(r.files["gallery"])
    tiles = r.new_tiles(lambda: act(r, "open_gallery"), n=2)
    assert all(t.finished for t in tiles)


@handles("atlas")
def _atlas(r: Run) -> None:
    r.w.layers.select(LOGITS)
    r.folder_answer = str(r.files["atlas"])
    act(r, "atlas")
    r.settle()
    assert (r.files["atlas"] / "index.html").is_file()
    assert "Atlas: 8 rendered" in r.log_text()


# -- the image inspector ---------------------------------------------------------------------------
@handles("open_image", "inspectDock:Open Image…", "inspectDock:Show")
def _open_image(r: Run) -> None:
    w, panel = r.w, r.w.inspect.panel
    r.file_answer = str(r.files["photo"])
    act(r, "open_image")
    r.settle()
    assert w.inspect.image is not None and w.inspect.image.name == "photo.png"
    assert panel.prediction is not None and panel.activations is not None
    r.file_answer = str(r.files["photo2"])
    click(r, "inspectDock:Open Image…")
    r.settle()
    assert w.inspect.image.name == "photo2.png"
    panel.top_spin.setValue(3)
    click(r, "inspectDock:Show")
    r.settle()
    assert panel.top_units.topLevelItemCount() == 3


@handles("inspectDock:Attribute to the Layer", "inspectDock:Factor into Groups",
         "inspectDock:Render the Activation Grid")  # fmt: skip
def _inspect_views(r: Run) -> None:
    panel = r.w.inspect.panel
    click(r, "inspectDock:Attribute to the Layer")
    r.settle()
    assert panel.attribution is not None and panel.channel_attr.topLevelItemCount() == 3
    panel.groups_spin.setValue(2)
    click(r, "inspectDock:Factor into Groups")
    r.settle()
    assert panel.neuron_groups is not None and panel.neuron_groups.k == 2
    click(r, "inspectDock:Render the Activation Grid")
    r.settle()
    assert panel.activation_grid is not None and panel.grid_view.renders


@handles("inspectDock:Accentuate the Unit", "inspectDock:Invert the Layer",
         "inspectDock:Caricature")  # fmt: skip
def _inspect_renders(r: Run) -> None:
    for key, kind in (("inspectDock:Accentuate the Unit", "accentuate"),
                      ("inspectDock:Invert the Layer", "inversion"),
                      ("inspectDock:Caricature", "caricature")):  # fmt: skip
        (tile,) = r.new_tiles(lambda key=key: click(r, key))
        assert tile.kind == kind


@handles("inspectDock:ScrollLeftButton", "inspectDock:ScrollRightButton")
def _inspect_tab_scroll(r: Run) -> None:
    tabs = r.w.inspect.panel.tabs
    shown = tabs.currentIndex()
    for key in ("inspectDock:ScrollRightButton", "inspectDock:ScrollLeftButton"):
        r.seen[key].click()  # scrolls the tab bar when the dock is narrow; nothing else
    assert tabs.currentIndex() == shown


@handles("activation_atlas")
def _activation_atlas(r: Run) -> None:
    r.w.layers.select(BLOCK3)
    act(r, "activation_atlas")
    win = r.w._actatlas  # gui/actatlas; tests/gui/test_gui_actatlas.py drives a build in it
    assert win.isVisible() and win.layer.currentText() == BLOCK3
    win.close()


# -- the dataset -----------------------------------------------------------------------------------
@handles("dataset", "DatasetDialog:Browse…", "DatasetDialog:OK")
def _dataset(r: Run) -> None:
    w = r.w
    images = str(r.files["images"])
    r.folder_answer = images

    def answer(d: QDialog) -> None:
        press(d, "DatasetDialog:Browse…")
        assert d.folder.text() == images
        r.qtbot.waitUntil(lambda: "16 images" in d.summary.text(), timeout=60_000)
        d.top.setValue(4)
        d.bottom.setValue(0)
        press(d, "DatasetDialog:OK")

    r.modal(lambda: act(r, "dataset"), answer)
    r.settle()
    assert w.datasets.choice is not None and w.datasets.choice.root == images
    assert "(16 images)" in r.log_text()


@handles("dataset_spectrum")
def _dataset_spectrum(r: Run) -> None:
    act(r, "dataset_spectrum")
    r.settle()  # the folder's spectrum is measured off the GUI thread
    assert r.w.settings_panel.value("maco_spectrum") == str(r.files["images"])
    r.w.settings_panel.widgets["maco_spectrum"].choose("")


@handles("layer_examples", "tree-layer:Dataset Examples of This Layer")
def _layer_examples(r: Run) -> None:
    w = r.w
    browser = w.datasets.browser
    w.layers.select(BLOCK3)
    act(r, "layer_examples")
    assert w.browser_dock.isVisible()
    r.settle()
    assert browser.layer_examples is not None and browser.layer_examples.layer == BLOCK3
    assert browser.rows.rowCount() == 64
    r.tree_menu(CONV1, choose="tree-layer:Dataset Examples of This Layer")
    r.settle()
    assert browser.layer_examples.layer == CONV1


@handles("DatasetDialog:Clear cache", "DatasetDialog:Cancel")
def _clear_cache(r: Run) -> None:
    from fvdesk.core.dataset.cache import cache_size

    w = r.w
    choice = w.datasets.choice
    assert cache_size(w.model.sha256) > 0, "the passes above left nothing in the cache"

    def answer(d: QDialog) -> None:
        r.qtbot.waitUntil(lambda: "for this model" in d.cache_label.text(), timeout=60_000)
        press(d, "DatasetDialog:Clear cache")
        r.qtbot.waitUntil(lambda: d.clear_button.isEnabled(), timeout=60_000)
        r.qtbot.waitUntil(lambda: d.cache_label.text().startswith("0 bytes for this model"))
        press(d, "DatasetDialog:Cancel")

    r.modal(lambda: act(r, "dataset"), answer)
    assert w.datasets.choice == choice  # cancelled: the choice stays
    assert cache_size(w.model.sha256) == 0


@handles("layerExamplesDock:Cancel")
def _browser_cancel(r: Run) -> None:
    browser = r.w.datasets.browser
    with long_renders(r, 11):  # ahead in the queue: the pass waits behind it
        r.w.datasets.browse_layer("/features/block2/relu/Relu")
        assert browser.running and browser.cancel_button.isVisibleTo(browser)
        click(r, "layerExamplesDock:Cancel")
        assert not browser.running and not browser.cancel_button.isVisibleTo(browser)
        r.w.queue.cancel_all()
    assert "Cancelled" in browser.label.text()


@handles("DatasetDialog:No dataset")
def _no_dataset(r: Run) -> None:
    w = r.w
    r.modal(lambda: act(r, "dataset"), lambda d: press(d, "DatasetDialog:No dataset"))
    r.settle()
    assert w.datasets.choice is None and w.prefs.dataset_for(w.model.sha256) == {}
    assert not w.actions_by_key["dataset_spectrum"].isEnabled()


# -- cancelling ------------------------------------------------------------------------------------
@handles("cancel")
def _cancel(r: Run) -> None:
    with long_renders(r, 12) as (tile,):
        act(r, "cancel")
        assert "Cancelling" in r.status()
    assert tile.state == CANCELLED


@handles("cancel_all")
def _cancel_all(r: Run) -> None:
    with long_renders(r, 13, 14) as (first, second):
        assert second.state == QUEUED
        act(r, "cancel_all")
    assert first.state == second.state == CANCELLED


@handles("clear_tiles")
def _clear_tiles(r: Run) -> None:
    a_unit_tile(r)
    act(r, "clear_tiles")
    assert r.w.tiles.rowCount() == 0


# -- help ------------------------------------------------------------------------------------------
@handles("shortcuts", "ShortcutsDialog:Close")
def _shortcuts(r: Run) -> None:
    from fvdesk.gui.shell.actions import command_specs

    rows: list[int] = []

    def answer(d: QDialog) -> None:
        rows.append(d.table.rowCount())
        press(d, "ShortcutsDialog:Close")
        assert not d.isVisible()

    r.modal(lambda: act(r, "shortcuts"), answer)
    assert rows == [len(command_specs())]


@handles("about", "AboutDialog:Copy Versions", "AboutDialog:Close")
def _about(r: Run) -> None:
    import fvdesk

    def answer(d: QDialog) -> None:
        press(d, "AboutDialog:Copy Versions")
        assert QGuiApplication.clipboard().text() == d.text()
        press(d, "AboutDialog:Close")
        assert not d.isVisible()

    r.modal(lambda: act(r, "about"), answer)
    assert fvdesk.__version__ in QGuiApplication.clipboard().text()


# -- models: reopened after everything above -------------------------------------------------------
@handles("open")
def _open(r: Run) -> None:
    r.file_answer = str(r.files["model"])
    old = r.w.model
    model = r.load(lambda: act(r, "open"))
    assert model is not old and model.path == r.files["model"]
    assert "Loaded demo_copy" in r.log_text()


@handles("open_demo")
def _open_demo(r: Run) -> None:
    from fvdesk.core.resources import demo_model_path

    a_unit_tile(r)  # renders of the previous model stay on the canvas
    model = r.load(lambda: act(r, "open_demo"))
    assert model.path == demo_model_path()
    assert r.w.tiles.rowCount() >= 1
    a_unit_tile(r)  # and the new model renders


@handles("recent:file")
def _open_recent(r: Run) -> None:
    entries = r.record(window_entries(r.w))
    recent = r.w.menus["@recent"]
    files = [a for a in recent.actions() if a.statusTip().endswith(".onnx")]
    assert [a.statusTip() for a in files] == r.w.prefs.recent_files()
    old = r.w.model
    last = next(a for a in files if a.statusTip() == str(r.files["model"].resolve()))
    assert entries["recent:file"] in files
    model = r.load(last.trigger)
    assert model is not old and model.path.resolve() == r.files["model"].resolve()
    a_unit_tile(r)


@handles("recent:Clear Recent", "recent:No recent models")
def _clear_recent(r: Run) -> None:
    entries = r.record(window_entries(r.w))
    entries["recent:Clear Recent"].trigger()
    assert r.w.prefs.recent_files() == []
    entries = r.record(window_entries(r.w))
    assert not entries["recent:No recent models"].isEnabled()
    assert "recent:file" not in entries


@handles("close_model")
def _close_model(r: Run) -> None:
    w = r.w
    a_unit_tile(r)
    act(r, "close_model")
    assert w.model is None and w.windowTitle() == "fvdesk"
    assert w.layers.tree_model.rowCount() == 0 and w.layers.tree_proxy.rowCount() == 0
    assert not w.actions_by_key["render_selected"].isEnabled()
    r.load(lambda: w.open_model(r.files["model"]))


@handles("quit")
def _quit(r: Run) -> None:
    w = r.w
    act(r, "quit")
    r.qtbot.waitUntil(lambda: not w.isVisible())
    assert not w.queue.thread_running()


# ------------------------------------------------------------------------------------------------
# the test
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path, examples_cache) -> dict[str, Path]:  # examples_cache: a private cache
    import torch

    from fvdesk.core.resources import demo_model_path
    from tests.core.optim.test_article_engine import _export, _TinyGenerator

    models = tmp_path / "models"
    models.mkdir()
    model = models / "demo_copy.onnx"
    shutil.copy(demo_model_path(), model)
    generator = _export(_TinyGenerator().eval(), torch.zeros(1, 16), models / "gen.onnx")
    return {
        "model": model,
        "generator": Path(generator),
        "images": pattern_folder(tmp_path / "images", per_class=2, size=32),
        "labels": tmp_path / "labels.txt",
        "gallery": tmp_path / "gallery",
        "atlas": tmp_path / "atlas",
        "directions": tmp_path / "directions.npy",
        "png": tmp_path / "zoom.png",
        "photo": _photo(tmp_path / "photo.png", 3),
        "photo2": _photo(tmp_path / "photo2.png", 5),
    }


def _photo(path: Path, cls: int) -> Path:
    """A pattern image of demo class ``cls`` to inspect."""
    from fvdesk.core.patterns import generate
    from tests.images import save_png

    x, y = generate(16, 64, seed=3)
    return save_png(path, x[int(np.flatnonzero(y == cls)[0])])


def check_step(r: Run, capfd, qtlog) -> None:
    """Nothing went wrong in the step: no exception anywhere, failures only where expected and
    each said in one sentence."""
    w = r.w
    new_errors = r.take_errors()
    assert not r.problems, r.problems
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, f"stderr: {err}"
    qt = [m.message for m in qtlog.records[r._qt_seen :]
          if m.type not in (QtMsgType.QtDebugMsg, QtMsgType.QtInfoMsg)
          and not any(b in m.message for b in BENIGN_QT)]  # fmt: skip
    r._qt_seen = len(qtlog.records)
    assert not qt, f"Qt said {qt}"
    failed = [t for t in w.tiles.tiles() if t.state == FAILED and t.id not in r._failed_seen]
    r._failed_seen.update(t.id for t in failed)
    unexpected = [(t.caption, t.message) for t in failed if t.id not in r._failed_ok]
    assert not unexpected, f"tiles failed: {unexpected}"
    assert all(one_sentence(t.message) for t in failed), [t.message for t in failed]
    assert not new_errors, f"errors shown: {new_errors}"  # a step expecting one takes it


def test_every_action_of_the_window_works_on_a_loaded_model(
    qtbot, window, isolated, files, monkeypatch, capfd, qtlog
) -> None:
    w = window
    r = Run(qtbot, w, files)

    # file dialogs answer with the run's files, questions are answered Yes, a dialog or menu
    # nobody expected is closed (and fails the step); nothing may reach an exception hook
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (r.file_answer, ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: r.folder_answer)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (r.save_answer, ""))
    monkeypatch.setattr(
        QMessageBox, "question",
        lambda _p, title, *a, **k: r.questions.append(title) or QMessageBox.StandardButton.Yes,
    )  # fmt: skip
    hooks = r.problems
    monkeypatch.setattr(sys, "excepthook", lambda t, e, _tb: hooks.append(f"excepthook {t}: {e}"))
    monkeypatch.setattr(threading, "excepthook", lambda a: hooks.append(f"thread: {a.exc_value!r}"))
    monkeypatch.setattr(sys, "unraisablehook", lambda u: hooks.append(f"unraisable {u!r}"))
    watchdog = QTimer()
    watchdog.timeout.connect(r.close_strays)
    watchdog.start(500)
    recorder = Recorder(r.problems)
    logging.getLogger().addHandler(recorder)
    try:
        menus = len(w.findChildren(QMenu))  # the menu bar's
        r.discover()  # no model: the recent list is empty
        r.load(lambda: w.open_model(files["model"]))
        r.discover()
        done: list[Handler] = []
        for key, handler in HANDLERS.items():
            if handler in done:
                continue
            try:
                handler(r)
                r.settle()
                check_step(r, capfd, qtlog)
                if w.isVisible():
                    r.discover()
            except AssertionError as e:
                raise AssertionError(f"in the step of {key!r}: {e}") from e
            done.append(handler)
    finally:
        watchdog.stop()
        logging.getLogger().removeHandler(recorder)

    # every right-click above made a context menu: none of them is left behind (each held
    # the tile or layer it was opened on)
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert len(w.findChildren(QMenu)) == menus, "context menus are never deleted"
    unhandled = sorted(set(r.seen) - set(HANDLERS))
    assert not unhandled, f"entries of the window without a handler in HANDLERS: {unhandled}"
    stale = sorted(set(HANDLERS) - set(r.seen))
    assert not stale, f"handlers whose entry the window no longer has: {stale}"
    assert not r.questions, r.questions
    assert len(isolated) == len(w.errors)  # every error was shown the one way, and checked
