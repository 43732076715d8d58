"""The window's docks: each listed in View > Panels and kept in the saved layout; the default
arrangement (sizes, tabs) applied when there is no saved layout and by Reset Layout; and docks that
join a tab group only when first shown.

Tabs are made only once the window is on screen: tabified before it is shown, two tab groups of
docks leave a stray, empty tab bar (Qt 6.11).
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QWidget

AREAS = {
    "left": Qt.DockWidgetArea.LeftDockWidgetArea,
    "right": Qt.DockWidgetArea.RightDockWidgetArea,
    "bottom": Qt.DockWidgetArea.BottomDockWidgetArea,
}


class Docks:
    """Creates and arranges a ``QMainWindow``'s docks."""

    def __init__(self, window: QMainWindow, panels_menu: QMenu) -> None:
        self.window = window
        self.panels_menu = panels_menu
        self.all: list[QDockWidget] = []
        #: (docks, sizes, orientation) applied with ``resizeDocks`` for the default layout
        self.default_sizes: list[tuple[list[QDockWidget], list[int], Qt.Orientation]] = []
        #: (first, second): tabbed together in the default layout, ``first`` in front
        self.default_tabs: list[tuple[QDockWidget, QDockWidget]] = []
        #: dock -> the dock it is tabbed beside when first shown (hidden until then)
        self.lazy: dict[QDockWidget, QDockWidget] = {}
        self._default_state = QByteArray()
        self._restored = False
        self._shown = False

    def add(self, title: str, name: str, widget: QWidget, area: str) -> QDockWidget:
        dock = QDockWidget(title, self.window)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.window.addDockWidget(AREAS[area], dock)
        self.all.append(dock)
        self.panels_menu.addAction(dock.toggleViewAction())
        return dock

    def restore(self, state: QByteArray | None) -> None:
        """Remember the default layout, then restore ``state`` (the saved one) if it is valid."""
        for dock in self.lazy:
            dock.hide()
        self._default_state = self.window.saveState()
        self._restored = state is not None and self.window.restoreState(state)
        if not self._restored:
            self._apply_sizes()

    def shown(self) -> None:
        """The window is on screen for the first time: the default tabs, unless restored."""
        if not self._shown:
            self._shown = True
            if not self._restored:
                self._apply_tabs()
                self._apply_sizes()  # again, now that the window has its real size

    def reset(self) -> None:
        self.window.restoreState(self._default_state)
        self._apply_sizes()
        for dock in self.all:
            dock.setVisible(dock not in self.lazy)
            dock.setFloating(False)
        self._apply_tabs()

    def show_lazy(self, dock: QDockWidget) -> None:
        """Show ``dock``, tabbed beside its partner the first time (where the partner is)."""
        beside = self.lazy.get(dock)
        first = beside is not None and not dock.isVisible() and not dock.isFloating()
        if first and beside is not None and beside.isVisible():
            self.window.tabifyDockWidget(beside, dock)
        dock.show()
        dock.raise_()

    def _apply_sizes(self) -> None:
        for docks, sizes, orientation in self.default_sizes:
            self.window.resizeDocks(docks, sizes, orientation)

    def _apply_tabs(self) -> None:
        for first, second in self.default_tabs:
            self.window.tabifyDockWidget(first, second)
        for first, _second in self.default_tabs:
            first.raise_()
