"""Choosing the dataset: the folder, the number of examples, and whether the folder's colour
statistics drive the decorrelation; it shows what the folder holds and the cache's size, and
clears the cache.  Scanning and clearing run through a ``JobRunner``, off the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.dataset.choice import DatasetChoice
from fvdesk.gui.runtime.runners import JobRunner


# ------------------------------------------------------------------------------------------------
# Choosing the dataset
# ------------------------------------------------------------------------------------------------
class DatasetDialog(QDialog):
    """Choose the image folder for a model (see the module docstring).  ``choice()`` is the
    result after ``exec()``: a ``DatasetChoice``, or ``None`` when the user chose no dataset."""

    scanned = Signal(str)  # the folder summary shown (for tests and status bars)

    def __init__(self, runner: JobRunner, choice: DatasetChoice | None = None, *,
                 model_sha256: str | None = None, parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.setWindowTitle("Dataset")
        self.runner = runner
        self.sha = model_sha256
        self._cleared = False
        self._scan_gen = 0
        self.folder = QLineEdit(choice.root if choice else "")
        self.folder.setPlaceholderText("a folder of images (searched recursively)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.top = QSpinBox()
        self.top.setRange(1, 256)
        self.top.setValue(choice.top if choice else 9)
        self.top.setToolTip("How many of the most exciting images each unit shows.")
        self.bottom = QSpinBox()
        self.bottom.setRange(0, 256)
        self.bottom.setValue(choice.bottom if choice else 9)
        self.bottom.setToolTip("How many of the least exciting images each unit shows (0: none).")
        self.colours = QCheckBox("Estimate the colour decorrelation from these images")
        self.colours.setChecked(bool(choice and choice.colours))
        self.colours.setToolTip(
            "Renders then decorrelate colours with this folder's colour statistics instead of "
            "ImageNet's; the matrix is recorded in every render's provenance."
        )
        self.cache_label = QLabel("")
        self.clear_button = QPushButton("Clear cache")
        self.clear_button.clicked.connect(self._clear_cache)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_label, 1)
        cache_row.addWidget(self.clear_button)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("", self.summary)
        form.addRow("Top examples", self.top)
        form.addRow("Bottom examples", self.bottom)
        form.addRow("", self.colours)
        form.addRow("Cache", cache_row)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.none_button = self.buttons.addButton(
            "No dataset", QDialogButtonBox.ButtonRole.ResetRole
        )
        self.none_button.clicked.connect(self._no_dataset)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.buttons)
        self.folder.textChanged.connect(self._rescan)
        self._rescan()
        self._refresh_cache()

    def choice(self) -> DatasetChoice | None:
        if self._cleared or not self.folder.text().strip():
            return None
        return DatasetChoice(self.folder.text().strip(), self.top.value(), self.bottom.value(),
                             self.colours.isChecked())  # fmt: skip

    def _browse(self) -> None:
        start = self.folder.text() or str(Path.home())
        chosen = QFileDialog.getExistingDirectory(self, "Image folder", start)
        if chosen:
            self.folder.setText(chosen)

    def _no_dataset(self) -> None:
        self._cleared = True
        self.accept()

    def _ok(self, enabled: bool) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(enabled)

    def _rescan(self) -> None:
        from fvdesk.core.imagefolder import scan_folder

        self._scan_gen += 1
        gen = self._scan_gen
        text = self.folder.text().strip()
        self._ok(False)
        if not text:
            self._show_summary(gen, "")
            return
        self.summary.setText("Reading the folder…")

        def scan() -> tuple[str, int]:
            s = scan_folder(text)
            other = f", {len(s.other):,} other files" if s.other else ""
            return f"{len(s.images):,} images{other}.", len(s.images)

        self.runner.call(scan, lambda r: self._show_summary(gen, r[0], ok=r[1] > 0),
                         lambda msg: self._show_summary(gen, msg))  # fmt: skip

    def _show_summary(self, gen: int, message: str, *, ok: bool = False) -> None:
        if gen != self._scan_gen:
            return
        self.summary.setText(message)
        self._ok(ok)
        self.scanned.emit(message)

    def _refresh_cache(self) -> None:
        from fvdesk.core.dataset.cache import cache_size, format_bytes

        sha = self.sha

        def sizes() -> str:
            total = cache_size()
            mine = f"{format_bytes(cache_size(sha))} for this model, " if sha else ""
            return f"{mine}{format_bytes(total)} in all"

        self.runner.call(sizes, self.cache_label.setText, self.cache_label.setText)

    def _clear_cache(self) -> None:
        from fvdesk.core.dataset.cache import clear_cache

        sha = self.sha
        self.clear_button.setEnabled(False)

        def done(_freed: object) -> None:
            self.clear_button.setEnabled(True)
            self._refresh_cache()

        self.runner.call(lambda: clear_cache(sha), done, self.cache_label.setText)
