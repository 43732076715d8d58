"""Test support (tests/integration/test_readme.py): close the app's window once its first model has loaded.

Python imports ``sitecustomize`` at start-up from the path; the README test puts this folder on
``PYTHONPATH`` only for the app commands it runs, so the app is started exactly as the console
script starts it and ends by itself.  Nothing happens unless ``FVDESK_TEST_CLOSE_WHEN_LOADED``
is set.
"""

import os

if os.environ.get("FVDESK_TEST_CLOSE_WHEN_LOADED"):
    import importlib.abc
    import sys

    def _patch(module) -> None:
        from PySide6.QtCore import QTimer

        show = module.MainWindow.show

        def show_then_close_when_loaded(self) -> None:
            show(self)

            def poll() -> None:
                model = self.session.model
                if model is not None and not self.session.is_loading():
                    print(f"fvdesk-test: loaded {model.path}", flush=True)
                    self.close()
                    return
                QTimer.singleShot(50, poll)

            QTimer.singleShot(50, poll)

        module.MainWindow.show = show_then_close_when_loaded

    class _Hook(importlib.abc.MetaPathFinder):
        """Patches ``fvdesk.gui.shell.main_window`` when (and only when) the app imports it."""

        def find_spec(self, name, path, target=None):
            if name != "fvdesk.gui.shell.main_window":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_patch(module) -> None:
                exec_module(module)
                _patch(module)

            loader.exec_module = exec_and_patch
            return spec

    import importlib.util

    sys.meta_path.insert(0, _Hook())
