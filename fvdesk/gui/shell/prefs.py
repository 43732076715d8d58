"""Everything the app persists, through one ``QSettings``, read and written only here.

``FVDESK_SETTINGS`` (an ``.ini`` path) redirects the store, so tests and a second profile never
read or damage a developer's real settings.  Values are versioned: a store from a newer or
incompatible version is ignored key by key, never trusted blindly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

SETTINGS_ENV = "FVDESK_SETTINGS"
ORGANIZATION = "fvdesk"
APPLICATION = "fvdesk"
VERSION = 1
MAX_RECENT = 10


def open_settings() -> QSettings:
    """The store: an ini file when ``FVDESK_SETTINGS`` is set, else the platform default."""
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return QSettings(override, QSettings.Format.IniFormat)
    return QSettings(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
    )


class Prefs:
    """Typed access to the persisted values (geometry, docks, recent files, render settings)."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qs = settings if settings is not None else open_settings()
        stored = self.qs.value("version")
        if stored is not None and str(stored) != str(VERSION):
            # A different layout of keys: start fresh rather than misread it.
            self.qs.clear()
        self.qs.setValue("version", VERSION)

    # -- window -------------------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        value = self.qs.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def state(self) -> QByteArray | None:
        value = self.qs.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qs.setValue("window/geometry", geometry)
        self.qs.setValue("window/state", state)

    # -- recent files -------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.qs.value("recent/files")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return []
        return [str(v) for v in value if v][:MAX_RECENT]

    def add_recent(self, path: str | os.PathLike[str]) -> list[str]:
        text = str(Path(path).resolve())
        files = [text] + [f for f in self.recent_files() if f != text]
        files = files[:MAX_RECENT]
        self.qs.setValue("recent/files", files)
        return files

    def remove_recent(self, path: str) -> list[str]:
        files = [f for f in self.recent_files() if f != path]
        self.qs.setValue("recent/files", files)
        return files

    def clear_recent(self) -> None:
        self.qs.setValue("recent/files", [])

    # -- render settings (a JSON dict, so the engine's dataclass owns its own schema) ---------
    def render_settings(self) -> dict[str, Any]:
        return self._json("render/settings")

    def save_render_settings(self, values: dict[str, Any]) -> None:
        self.qs.setValue("render/settings", json.dumps(values, sort_keys=True))

    def ui_values(self) -> dict[str, Any]:
        """GUI-only choices (units per layer, facets, class objective, tile size)."""
        return self._json("render/ui")

    def save_ui_values(self, values: dict[str, Any]) -> None:
        self.qs.setValue("render/ui", json.dumps(values, sort_keys=True))

    # -- dataset per model (by sha256: the demo model's folder is read-only, and a folder path
    # belongs to this machine, so it goes here rather than in the model's sidecar) ------------
    def dataset_for(self, sha256: str) -> dict[str, Any]:
        """The stored dataset choice of a model (a ``DatasetChoice.to_dict()``), or ``{}``."""
        return self._json(f"datasets/{sha256[:32]}")

    def set_dataset_for(self, sha256: str, choice: dict[str, Any] | None) -> None:
        key = f"datasets/{sha256[:32]}"
        if choice is None:
            self.qs.remove(key)
        else:
            self.qs.setValue(key, json.dumps(choice, sort_keys=True))

    def last_dir(self, kind: str) -> str:
        return str(self.qs.value(f"dirs/{kind}", "") or "")

    def set_last_dir(self, kind: str, folder: str | os.PathLike[str]) -> None:
        self.qs.setValue(f"dirs/{kind}", str(folder))

    def sync(self) -> None:
        self.qs.sync()

    def _json(self, key: str) -> dict[str, Any]:
        raw = self.qs.value(key)
        if not raw:
            return {}
        try:
            value = json.loads(str(raw))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
