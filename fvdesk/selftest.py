"""``fvdesk --self-test``: does this installation (or frozen bundle) work end to end?

Each check prints one line (``ok`` / ``FAIL`` / ``skip``, a name, what was seen) and the command
exits 0 only when no check failed.  The checks follow what a user does first: the libraries
import, the embedded demo model loads and matches onnxruntime, a few optimization steps run on
every device torch sees (and raise the objective), a gallery is written to a temporary folder and
read back pixel for pixel, and the app's window builds (offscreen, with throwaway settings).  It
is what ``tools/build_cpu_bundle.sh`` runs on the frozen result, where a missing hidden import,
data file or Qt plugin shows up as one failed line instead of a crash in a user's hands.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

RENDER_STEPS = 12


@dataclass
class CheckResult:
    name: str
    status: str  # "ok" | "FAIL" | "skip"
    detail: str


class SelfTest:
    """Runs the checks in order; later checks reuse what earlier ones produced (the model)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.results: list[CheckResult] = []
        self.model: Any = None
        self.renders: list[list[Any]] = []  # the UnitResults of each device's render

    def check(self, name: str, fn: Callable[[], str | None]) -> bool:
        """Run one check; ``fn`` returns its detail line (``None`` means skipped)."""
        t0 = time.perf_counter()
        try:
            detail = fn()
            status = "skip" if detail is None else "ok"
            detail = detail or "not applicable here"
        except Exception as e:  # noqa: BLE001 - a self-test reports every failure as a line
            status = "FAIL"
            detail = " ".join(str(e).split()) or type(e).__name__
            if os.environ.get("FVDESK_DEBUG"):
                traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - t0
        r = CheckResult(name, status, f"{detail} ({seconds:.1f} s)")
        self.results.append(r)
        self.stream.write(f"{status:<5} {name:<18} {r.detail}\n")
        self.stream.flush()
        return status != "FAIL"

    # -- the checks -------------------------------------------------------------------------------
    def imports(self) -> str:
        import numpy
        import onnx
        import onnxruntime
        import torch

        from fvdesk import __version__
        from fvdesk.core.model.onnx2torch_compat import import_onnx2torch, torchvision_status

        import_onnx2torch()
        try:
            from importlib.metadata import version

            o2t = version("onnx2torch")
        except Exception:  # noqa: BLE001 - a frozen bundle may carry no package metadata
            o2t = "?"
        return (
            f"fvdesk {__version__}, torch {torch.__version__}, onnx {onnx.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, onnx2torch {o2t}, "
            f"numpy {numpy.__version__}, torchvision {torchvision_status()}"
        )

    def load(self) -> str:
        from fvdesk.core.model.loader import load_model
        from fvdesk.core.resources import demo_model_path

        path = demo_model_path()
        self.model = load_model(path, device="cpu")
        m = self.model
        return (
            f"{path.name}: {len(m.graph)} layers, input {m.input.channels}x{m.input.height}x"
            f"{m.input.width}, {len(m.labels or [])} labels"
        )

    def parity(self) -> str:
        par = _need(self.model).parity
        if par is None or not par.ok:
            raise RuntimeError(
                f"parity with onnxruntime failed: {par.describe() if par else 'none'}"
            )
        return par.describe()

    def render(self, device: str) -> str:
        import numpy as np

        from fvdesk.core.jobs.job import Job, UnitJob
        from fvdesk.core.jobs.run import run_job
        from fvdesk.core.model.loader import pick_feature_layer
        from fvdesk.core.optim.drive import drive
        from fvdesk.core.optim.events import StepEvent
        from fvdesk.core.optim.settings import RenderSettings

        model = _need(self.model)
        layer = pick_feature_layer(model) or model.graph.layers[-1].name
        settings = RenderSettings(steps=RENDER_STEPS, size=48, batch=2, seed=0, device=device)
        job = Job.for_model(model, UnitJob(layer, (0, 1)), settings)
        steps: list[StepEvent] = []
        out = drive(
            run_job(model, job, device=device),
            lambda ev: steps.append(ev) if isinstance(ev, StepEvent) else None,
        )
        results = out.results
        model.to("cpu")
        if len(results) != 2 or not steps:
            raise RuntimeError(f"expected 2 rendered units, got {len(results)}")
        for r in results:
            if r.image.dtype != np.uint8 or r.image.ndim != 3 or r.image.shape[:2] != (48, 48):
                raise RuntimeError(f"unit {r.unit} gave an image of shape {r.image.shape}")
        first, last = float(np.mean(steps[0].values)), float(np.mean(steps[-1].values))
        if not np.isfinite(last) or last <= first:
            raise RuntimeError(f"the objective did not rise ({first:.4g} -> {last:.4g})")
        self.renders.append(results)
        return f"{layer} units 0-1, {len(steps)} steps, objective {first:.3g} -> {last:.3g}"

    def gallery(self) -> str:
        import numpy as np

        from fvdesk.core.output.gallery import Gallery, GalleryItem, ModelInfo, read_gallery

        if not self.renders:
            raise RuntimeError("no render to save")
        results = self.renders[0]
        with tempfile.TemporaryDirectory(prefix="fvdesk-selftest-") as tmp:
            folder = Path(tmp) / "gallery"
            g = Gallery.open(folder, ModelInfo.from_model(_need(self.model)), title="self-test")
            g.add_many([(GalleryItem.from_result(r, device="cpu"), r.image) for r in results])
            g.finalize()
            _manifest, items = read_gallery(folder)
            if len(items) != len(results):
                raise RuntimeError(f"wrote {len(results)} images, read back {len(items)}")
            by_unit = {it.unit: img for it, img in items}
            for r in results:
                if not np.array_equal(by_unit.get(r.unit), r.image):  # type: ignore[arg-type]  # None (no image) compares unequal
                    raise RuntimeError(f"the image of unit {r.unit} changed on the way")
            files = sorted(p.name for p in folder.iterdir())
        return f"{len(items)} images, {len(files)} files written and read back identical"

    def app(self) -> str | None:
        try:
            import PySide6  # noqa: F401
        except ImportError:
            return None
        with _environ(QT_QPA_PLATFORM="offscreen", FVDESK_SETTINGS=None) as tmp:
            os.environ["FVDESK_SETTINGS"] = str(Path(tmp) / "settings.ini")
            from fvdesk.gui.app import make_app
            from fvdesk.gui.shell.main_window import MainWindow

            app = make_app()
            window = MainWindow()
            try:
                window.session.set_model(_need(self.model))
                app.processEvents()
                rows = window.layers.tree_model.rowCount()
                if rows < 1:
                    raise RuntimeError("the layer tree is empty")
            finally:
                window.close()
                window.shutdown()
        return (
            f"main window built on Qt platform {app.platformName()!r}, {rows} top-level tree rows"
        )


def _need(model: Any) -> Any:
    if model is None:
        raise RuntimeError("skipped: the demo model did not load")
    return model


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[str]:
    """Set environment variables (None: unset) and a temporary folder for the duration."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with tempfile.TemporaryDirectory(prefix="fvdesk-selftest-") as tmp:
            yield tmp
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def devices() -> list[str]:
    """The devices the render check runs on (``core.device.available_devices``)."""
    from fvdesk.core.device import available_devices

    return available_devices()


def expected_checks(device_names: Sequence[str]) -> list[str]:
    """The names of the checks, in order, on a machine with these devices: one render check
    per device, so the expected list follows the hardware instead of assuming a CPU-only box."""
    return [
        "imports",
        "load demo model",
        "parity",
        *(f"render {d}" for d in device_names),
        "gallery",
        "app window",
    ]


def run_self_test(stream: TextIO | None = None) -> int:
    """Run every check; returns the exit code (0 when none failed)."""
    t = SelfTest(stream)
    out = t.stream
    found = devices()
    steps: list[Callable[[], str | None]] = [t.imports, t.load, t.parity]
    steps += [functools.partial(t.render, d) for d in found]
    steps += [t.gallery, t.app]
    for name, fn in zip(expected_checks(found), steps, strict=True):
        t.check(name, fn)
    failed = [r for r in t.results if r.status == "FAIL"]
    if failed:
        out.write(f"self-test FAILED: {len(failed)} of {len(t.results)} checks failed.\n")
        return 1
    out.write(f"self-test passed: {len(t.results)} checks.\n")
    return 0
