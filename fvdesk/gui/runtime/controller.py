"""What every controller of the app shares: its collaborators and the signals the window shows.

A controller owns one concern (render jobs, galleries; later dataset examples, neuron arithmetic)
and works through the same three things: the ``ModelSession`` (the open model and the choices in
force), the ``RenderQueue`` (the one thread model work runs on) and the canvas's ``TileModel``.
The window connects ``message``, ``error`` and ``progress`` of every controller to the log, the
error dialog and the status bar, so a new controller is shown without new wiring.
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
