"""The public Python API is a contract: its names stay, are documented and typed, and load lazily."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fvdesk
import fvdesk.api

ROOT = Path(__file__).resolve().parents[2]

#: The names scripts may rely on.  Adding to ``fvdesk.__all__`` is fine; removing one fails here
#: (it needs a deprecation shim first, see fvdesk/core/_forward.py).
PINNED = {
    "load_model", "Model", "demo_model_path", "Preprocessing", "PRESETS",
    "Objective", "objective", "unit",
    "RenderSettings", "TransformSettings", "render", "render_units", "Renders", "RenderedImage",
    "save_gallery", "open_gallery", "GalleryView",
    "examples", "Examples",
    "FvdeskError", "ModelLoadError", "ConfigError", "RenderError", "GalleryError", "DatasetError",
}  # fmt: skip


def test_the_pinned_names_are_all_still_public() -> None:
    assert set(fvdesk.__all__) >= PINNED, sorted(PINNED - set(fvdesk.__all__))
    assert set(fvdesk.__all__) == set(fvdesk.api.__all__)


@pytest.mark.parametrize("name", sorted(fvdesk.__all__))
def test_each_public_name_is_there_and_documented(name: str) -> None:
    obj = getattr(fvdesk, name)
    assert getattr(fvdesk.api, name) is obj
    if inspect.isclass(obj) or inspect.isfunction(obj):
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        assert own and own.strip(), f"fvdesk.{name} has no docstring of its own"
    else:  # data (PRESETS): the package docstring says what it is
        assert f"``{name}``" in (fvdesk.api.__doc__ or ""), name


def _api_callables() -> list[tuple[str, object]]:
    """The API's own functions, and the public methods and properties of its own classes."""
    out: list[tuple[str, object]] = []
    for name in sorted(fvdesk.__all__):
        obj = getattr(fvdesk, name)
        if not getattr(obj, "__module__", "").startswith("fvdesk.api"):
            continue  # re-exported core names are the core's
        if inspect.isfunction(obj):
            out.append((name, obj))
        elif inspect.isclass(obj):
            for attr, member in inspect.getmembers(obj):
                if attr.startswith("_") and attr != "__init__":
                    continue
                func = member.fget if isinstance(member, property) else member
                if inspect.isfunction(func) and func.__module__.startswith("fvdesk.api"):
                    out.append((f"{name}.{attr}", func))
    return out


def test_the_api_has_callables_to_check() -> None:
    names = {n for n, _ in _api_callables()}
    assert {"render", "Renders.save", "Model.layer", "Model.layers", "Objective.terms"} <= names


@pytest.mark.parametrize("name,func", _api_callables(), ids=[n for n, _ in _api_callables()])
def test_public_callables_have_type_hints(name: str, func: object) -> None:
    sig = inspect.signature(func)  # type: ignore[arg-type]
    missing = [p.name for p in sig.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]  # fmt: skip
    assert not missing, f"{name}: parameters without a type hint: {missing}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return hint"
    assert inspect.getdoc(func), f"{name} has no docstring"


def _modules_after(code: str) -> dict[str, bool]:
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'PySide6', 'onnx')}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_fvdesk_loads_neither_torch_nor_qt() -> None:
    seen = _modules_after(
        "import fvdesk\nassert fvdesk.__version__\nassert 'render' in dir(fvdesk)"
    )
    assert seen == {"torch": False, "PySide6": False, "onnx": False}


def test_objectives_and_galleries_need_no_torch(tmp_path: Path) -> None:
    """Reading a gallery and writing objectives work where torch would be slow to load."""
    import numpy as np

    from fvdesk.core.output.gallery import GalleryItem, ModelInfo, write_gallery

    write_gallery(tmp_path / "g", ModelInfo("m.onnx", "0" * 64),
                  [(GalleryItem("a", 1, caption="a:1"), np.zeros((8, 8, 3), np.uint8))])  # fmt: skip
    seen = _modules_after(
        "import fvdesk\n"
        "o = fvdesk.unit('a', 1) + 0.5 * fvdesk.objective('b:2')\n"
        "assert str(o) == 'a:1 + 0.5·b:2', str(o)\n"
        f"g = fvdesk.open_gallery({str(tmp_path / 'g')!r})\n"
        "assert g.captions == ['a:1'] and g._repr_png_()[:4] == b'\\x89PNG'"
    )
    assert seen["torch"] is False and seen["PySide6"] is False


def test_the_import_probe_can_fail() -> None:
    assert _modules_after("import torch")["torch"] is True


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'rendr'"):
        fvdesk.rendr  # noqa: B018
    with pytest.raises(AttributeError):
        fvdesk.api.rendr  # noqa: B018
