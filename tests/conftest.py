"""Shared test set-up: headless Qt, a fixed CPU thread count, and the model fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests import models as test_models  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------
# Markers by where a test lives: the folder (tests/gui, tests/integration) or, for a file outside
# them, its name, so a new file is marked before tools/relayout.py files it.
# ------------------------------------------------------------------------------------------------
GUI_FILES = ("test_gui", "test_settings_dock")  # name prefixes
INTEGRATION_FILES = frozenset(
    {"test_readme", "test_selftest", "test_real_world", "test_zoo_matrix", "test_api_docs"}
)
NO_GPU = "needs a CUDA GPU, and torch sees none here"


def markers_for(path: os.PathLike[str] | str) -> set[str]:
    """The markers every test in the file at ``path`` gets (besides its own marks)."""
    from pathlib import Path

    p = Path(path)
    folders, stem = set(p.parent.parts), p.stem
    out = set()
    if "gui" in folders or stem.startswith(GUI_FILES):
        out.add("gui")
    if "integration" in folders or stem in INTEGRATION_FILES:
        out.add("integration")
    if "gpu" in folders or "gpu" in stem.split("_"):
        out.add("gpu")
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda: bool | None = None
    for item in items:
        for name in sorted(markers_for(item.path)):
            item.add_marker(name)
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason=NO_GPU))


@pytest.fixture(scope="session")
def demo_model_path():
    from fvdesk.core.resources import demo_model_path

    path = demo_model_path()
    assert path.is_file(), f"the embedded demo model is missing: {path}"
    return path


@pytest.fixture
def examples_cache(tmp_path_factory, monkeypatch):
    """A private dataset-examples cache (``FVDESK_CACHE_DIR``) for one test."""
    path = tmp_path_factory.mktemp("examples_cache")
    monkeypatch.setenv("FVDESK_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory):
    """A session folder where exported ONNX fixtures are written once and shared by tests."""
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="session")
def torchvision_onnx(model_cache):
    """``torchvision_onnx("resnet18", size=224)`` -> path of that architecture with random weights."""

    def make(arch: str, size: int = 224, **kwargs) -> os.PathLike:
        return test_models.torchvision_onnx(arch, model_cache, size=size, **kwargs)

    return make


# ------------------------------------------------------------------------------------------------
# The app (tests/gui/test_gui*.py; Qt is imported only by the tests that use these)
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Private settings file; error dialogs recorded (the list returned), never shown."""
    from PySide6.QtWidgets import QMessageBox

    from fvdesk.gui.shell import prefs as qt_prefs

    monkeypatch.setenv(qt_prefs.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    shown: list[tuple[str, str]] = []

    def critical(parent, title, text, *args, **kwargs):
        shown.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "critical", critical)
    return shown


@pytest.fixture(scope="module")
def demo_model():
    """The demo model, loaded once per test module (tests restore what they change)."""
    from fvdesk.core.model.loader import load_model
    from fvdesk.core.resources import demo_model_path

    return load_model(demo_model_path())


@pytest.fixture
def window(qtbot, isolated):
    from fvdesk.gui.shell.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.shutdown(timeout_ms=20_000)
    assert not w.queue.thread_running()


@pytest.fixture
def demo_window(window, demo_model):
    """A window showing the (module-shared) demo model, with fast render settings."""
    from tests.gui.support import fast_settings

    window.session.set_model(demo_model)
    fast_settings(window)
    return window
