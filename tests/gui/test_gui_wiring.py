"""The window wires its controllers by one loop over ``shell.wiring.CONTROLLERS``: every listed
controller's messages, errors and progress reach the window, and every action has a handler."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from fvdesk.gui.runtime.controller import Controller  # noqa: E402
from fvdesk.gui.shell.actions import ACTIONS, SEPARATOR, SUBMENU_DOCKS, SUBMENU_RECENT  # noqa: E402
from fvdesk.gui.shell.wiring import CONTROLLERS, window_commands  # noqa: E402


def test_every_controller_in_the_table_reaches_the_log_errors_and_status(window) -> None:
    assert {spec.attr for spec in CONTROLLERS} >= {"jobs", "galleries", "datasets", "article"}
    for spec in CONTROLLERS:
        ctl = getattr(window, spec.attr)
        assert isinstance(ctl, Controller)
        ctl.message.emit(f"hello from {spec.attr}", False)
        assert f"hello from {spec.attr}" in window.log_view.toPlainText()
        ctl.error.emit("Title", f"oops {spec.attr}")
        assert window.errors[-1] == ("Title", f"oops {spec.attr}")
        ctl.progress.emit(0.5, f"half of {spec.attr}")
        assert window.status.job_label.text() == f"half of {spec.attr}"
        for dock in spec.docks:
            assert getattr(window, dock.attr).widget() is getattr(ctl, dock.widget)


def test_every_action_has_exactly_one_owner(window) -> None:
    owners = [window_commands(window)]
    owners += [getattr(window, s.attr).commands(window.layers.selected_refs, window)
               for s in CONTROLLERS]  # fmt: skip
    keys = [k for handlers in owners for k in handlers]
    assert len(keys) == len(set(keys))
    placeholders = {SEPARATOR, SUBMENU_RECENT, SUBMENU_DOCKS}
    wanted = {a.key for a in ACTIONS if a.key not in placeholders and not a.checkable}
    assert wanted - set(keys) == set()


def test_every_controller_class_has_a_row_in_the_table(window) -> None:
    """A new controller that is not in ``CONTROLLERS`` would be built but never wired."""

    def subclasses(cls: type) -> set[type]:
        return {s for c in cls.__subclasses__() for s in {c} | subclasses(c)}

    app_controllers = {c for c in subclasses(Controller) if c.__module__.startswith("fvdesk.gui")}
    assert {type(getattr(window, s.attr)) for s in CONTROLLERS} == app_controllers
