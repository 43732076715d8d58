"""What every controller of the app shares: its collaborators and the signals the window shows.

A controller owns one concern (render jobs, galleries; later dataset examples, neuron arithmetic)
and works through the same three things: the ``ModelSession`` (the open model and the choices in
force), the ``RenderQueue`` (the one thread model work runs on) and the canvas's ``TileModel``.
The window wires every controller by one loop over its table (``fvdesk.gui.shell.wiring``):
``message``, ``error`` and ``progress`` go to the log, the error dialog and the status bar; the
actions a controller handles come from ``commands`` and are enabled by ``enabled``; the tree's
selection reaches ``follow_refs``; ``shutdown`` runs when the window closes.  The defaults do
nothing, so a controller overrides only what it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from fvdesk.gui.canvas.tiles import TileModel
from fvdesk.gui.runtime.session import ModelSession
from fvdesk.gui.runtime.worker import RenderQueue
from fvdesk.gui.settings.panel import split_values, to_render_settings


class Controller(QObject):
    """Base of the app's controllers (see the module docstring)."""

    progress = Signal(float, str)  # fraction done of its work, status text
    message = Signal(str, bool)  # text, also in the status bar
    error = Signal(str, str)  # title, message

    def __init__(
        self,
        session: ModelSession,
        queue: RenderQueue,
        tiles: TileModel,
        values: Callable[[], dict[str, Any]],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.queue = queue
        self.tiles = tiles
        self._values = values  # the settings dock's values

    def settings(self) -> Any:
        """The dock's ``RenderSettings`` now (``ConfigError`` when a value is rejected), with the
        session's settings hooks applied (e.g. the dataset's colour matrix)."""
        settings = to_render_settings(self._values())
        for hook in self.session.settings_hooks:
            settings = hook(settings)
        return settings

    def ui(self) -> dict[str, Any]:
        """The dock's batch-job choices (first N, facets, class objective)."""
        return split_values(self._values())[1]

    # -- what the window's wiring loop asks of every controller ------------------------------
    def commands(self, refs: Callable[[], list[Any]], parent: Any) -> dict[str, Callable[[], Any]]:
        """Handlers of the actions table's rows this controller owns (``refs()``: the tree's
        selected ``RowRef``s; ``parent``: the window, for dialogs)."""
        return {}

    def enabled(self, has_model: bool, refs: list[Any]) -> dict[str, bool]:
        """Whether each of those actions applies now."""
        return {}

    def follow_refs(self, refs: list[Any]) -> None:
        """The tree's selection changed."""

    def shutdown(self) -> None:
        """The window closes (the render queue is shut down after every controller)."""
