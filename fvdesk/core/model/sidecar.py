"""The sidecar ``MODEL.fvdesk.json``: the user's choices for a model, kept next to the model file.

A converted ONNX file rarely says how its input was preprocessed or what its classes are, so the
user's answer is remembered beside the model (``resnet.onnx`` -> ``resnet.fvdesk.json``)::

    {
      "version": 1,
      "preprocessing": {"preset": "caffe"},            # or {"preset": "custom", "range": [0, 255],
                                                       #     "mean": [...], "std": [...], "bgr": true}
      "labels": "classes.txt",                         # relative to the sidecar's folder, or absolute
      "input_name": "data_0",                          # which graph input is the image
      "input_size": [48, 320]                          # the size a size-agnostic graph runs at
    }

Every key is optional.  Writes are atomic so a crash never leaves a half-written sidecar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.fileio import atomic_write_text, parse_json
from fvdesk.core.model.preprocessing import PRESETS, Preprocessing, parse_preprocessing

SIDECAR_SUFFIX = ".fvdesk.json"
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class Sidecar:
    """The parsed sidecar; ``labels`` is an absolute path when set."""

    preprocessing: Preprocessing | None = None
    labels: Path | None = None
    input_name: str | None = None
    input_size: tuple[int, int] | None = None


def sidecar_path(model_path: str | Path) -> Path:
    """``folder/model.onnx`` -> ``folder/model.fvdesk.json``."""
    p = Path(model_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def read_sidecar(model_path: str | Path) -> Sidecar | None:
    """The sidecar of ``model_path``, or None when there is none; ``ConfigError`` when malformed."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"The sidecar {path} is not UTF-8 text.") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"The sidecar {path} is not valid JSON (line {e.lineno}: {e.msg})."
        ) from None
    except OSError as e:
        raise ConfigError(f"The sidecar {path} cannot be read ({e.strerror or e}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The sidecar {path} must hold a JSON object.")
    pre = None
    if data.get("preprocessing") is not None:
        pre = parse_preprocessing(data["preprocessing"], "sidecar", f"The sidecar {path}")
    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, str) or not labels:
            raise ConfigError(f"The sidecar {path} has a 'labels' entry that is not a file name.")
        labels = (path.parent / labels).resolve()
    name = data.get("input_name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"The sidecar {path} has an 'input_name' that is not a string.")
    return Sidecar(pre, labels, name, _input_size(data.get("input_size"), path))


def _input_size(raw: Any, path: Path) -> tuple[int, int] | None:
    if raw is None:
        return None
    try:
        size = parse_input_size(raw)
    except ValueError:
        raise ConfigError(
            f"The sidecar {path} has an 'input_size' that is not [height, width] in 8..4096 px."
        ) from None
    return size


def parse_input_size(raw: Any) -> tuple[int, int]:
    """``48x320``, ``224``, ``[48, 320]`` -> (height, width); ``ValueError`` when not 8..4096 px."""
    if isinstance(raw, str):
        parts = raw.lower().replace("×", "x").split("x")
        try:
            raw = [int(p) for p in parts] if len(parts) == 2 else int(parts[0])
        except ValueError:
            raise ValueError(raw) from None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw, raw]
    if not (
        isinstance(raw, (list, tuple))
        and len(raw) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in raw)
    ):
        raise ValueError(raw)
    return int(raw[0]), int(raw[1])


def save_sidecar(
    model_path: str | Path,
    *,
    preprocessing: Preprocessing | None = None,
    labels: str | Path | None = None,
    input_name: str | None = None,
    input_size: tuple[int, int] | None = None,
    keep_existing: bool = True,
    forget: tuple[str, ...] = (),
) -> Path:
    """Write (atomically) the user's choices beside the model; returns the sidecar path.

    With ``keep_existing`` the entries not given are kept from the current sidecar (a malformed
    current sidecar is replaced).  The labels path is stored relative to the sidecar when it lies in
    the same folder tree, so a model folder can be moved as a whole.  ``forget`` names entries to
    drop (``("labels",)`` when the user goes back to the labels the model came with).
    """
    path = sidecar_path(model_path)
    data: dict[str, Any] = {}
    if keep_existing and path.is_file():
        try:
            old = parse_json(path.read_text(encoding="utf-8"))
            if isinstance(old, dict):
                data.update(old)
        except (OSError, ValueError):
            pass
    for key in forget:
        data.pop(key, None)
    data["version"] = SIDECAR_VERSION
    if preprocessing is not None:
        d = preprocessing.to_dict()
        d.pop("source", None)
        if preprocessing.preset in PRESETS and replace(
            PRESETS[preprocessing.preset], source="x"
        ) == replace(preprocessing, source="x"):
            d = {"preset": preprocessing.preset}
        else:
            d["preset"] = "custom"
        data["preprocessing"] = d
    if labels is not None:
        lp = Path(labels).resolve()
        try:
            data["labels"] = lp.relative_to(path.parent.resolve()).as_posix()
        except ValueError:
            data["labels"] = str(lp)
    if input_name is not None:
        data["input_name"] = input_name
    if input_size is not None:
        data["input_size"] = [int(input_size[0]), int(input_size[1])]
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as e:
        raise ConfigError(f"The sidecar {path} cannot be written ({e.strerror or e}).") from None
    return path
