"""Help > About: what a bug report needs — versions of fvdesk and every library, Qt and the device."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

import fvdesk

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnx2torch", "numpy", "pillow")
# onnxruntime ships under several distribution names (CPU, GPU, DirectML, ...).
_DISTS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon")
}


def library_version(name: str) -> str:
    """Installed version from package metadata (no import), or the module's ``__version__``."""
    for dist in _DISTS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    module = sys.modules.get(name)
    return str(getattr(module, "__version__", "not installed"))


def versions(device: str | None = None) -> list[tuple[str, str]]:
    """(name, version) rows shown in the dialog and copied for bug reports."""
    rows = [("fvdesk", fvdesk.__version__)]
    rows += [(name, library_version(name)) for name in LIBRARIES]
    rows.append(("Qt", f"{qVersion()} (PySide6 {PySide6.__version__})"))
    rows.append(
        ("Python", f"{platform.python_version()} ({platform.system()} {platform.machine()})")
    )
    rows.append(("Device", device or current_device_text()))
    return rows


def current_device_text() -> str:
    """The device renders would use with the default choice."""
    try:
        from fvdesk.core.device import describe_device, pick_device

        return describe_device(pick_device("auto"))
    except Exception as exc:  # noqa: BLE001 - the About box must open even with a broken torch
        return f"unknown ({exc})"


class AboutDialog(QDialog):
    """Versions in a table, with a button that copies them as plain text."""

    def __init__(self, device: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About fvdesk")
        self.rows = versions(device)
        title = QLabel(
            "<h2>fvdesk</h2><p>Feature visualization for ONNX image classifiers, after "
            "Olah, Mordvintsev &amp; Schubert, <i>Feature Visualization</i>, Distill 2017.</p>"
        )
        title.setWordWrap(True)
        table = "".join(
            f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in self.rows
        )
        body = QLabel(f"<table>{table}</table>")
        body.setObjectName("aboutVersions")
        body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        copy = QPushButton("Copy Versions")
        copy.clicked.connect(self.copy)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(body)
        layout.addWidget(buttons)

    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.rows)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text())


def app_icon() -> QIcon:
    """The fvdesk icon: the SVG, or the PNG where Qt's SVG plugin is missing (frozen builds)."""
    from fvdesk.core.resources import resource_path

    icon = QIcon()
    for name in ("fvdesk.svg", "fvdesk.png"):
        path = resource_path("icons", name)
        if path.is_file():
            icon = QIcon(str(path))
            if not icon.pixmap(32, 32).isNull():
                break
    return icon
