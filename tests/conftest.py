"""Shared test set-up: headless Qt, a fixed CPU thread count, and the model fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests import models as test_models  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


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
