"""Class labels: from the model's metadata, a labels file the user chose, or built-in ImageNet-1k.

Labels only name the units of the logits layer; a wrong or missing list never stops loading.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.fileio import parse_json
from fvdesk.core.resources import resource_path

IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names shipped in ``resources/labels/imagenet1k.txt``."""
    return tuple(read_labels_file(resource_path("labels", "imagenet1k.txt")))


def read_labels_file(path: str | Path) -> list[str]:
    """A ``.txt`` file (one label per line) or JSON (a list, or an object ``{"0": "cat", ...}``).

    Raises ``ConfigError`` naming the file when it is missing or malformed.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"The labels file {p} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"The labels file {p} is a folder, not a file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The labels file {p} is not UTF-8 text.") from None
    except OSError as e:
        raise ConfigError(f"The labels file {p} cannot be read ({e.strerror or e}).") from None
    if not text.strip():
        raise ConfigError(f"The labels file {p} is empty.")
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = parse_json(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"The labels file {p} is not valid JSON (line {e.lineno}: {e.msg})."
            ) from None
        labels = labels_from_json(data)
        if labels is None:
            raise ConfigError(
                f"The labels file {p} must hold a JSON list of names or an object index -> name."
            )
        return labels
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"The labels file {p} is empty.")
    return lines


def labels_from_json(data: Any) -> list[str] | None:
    """A list of names, or a mapping of integer-like keys to names -> list; None when neither."""
    if isinstance(data, list) and all(isinstance(x, (str, int, float)) for x in data):
        return [str(x) for x in data]
    if isinstance(data, dict) and data:
        try:
            items = sorted((int(k), str(v)) for k, v in data.items())
        except (TypeError, ValueError):
            return None
        n = items[-1][0] + 1
        if items[0][0] < 0 or n > 100_000:
            return None
        out = [str(i) for i in range(n)]
        for k, v in items:
            out[k] = v
        return out
    return None


def labels_from_metadata(props: dict[str, str]) -> list[str] | None:
    """Labels stored in ONNX ``metadata_props``: ``fvdesk.labels`` (JSON list), or what other tools write.

    Recognized: ``fvdesk.labels``; ``labels`` / ``classes`` / ``class_names`` (JSON list or
    object); ``names`` (the Ultralytics export writes a Python-style dict ``{0: 'person', ...}``).
    """
    for key in ("fvdesk.labels", "labels", "classes", "class_names", "names"):
        raw = props.get(key)
        if not raw:
            continue
        try:
            data = parse_json(raw)
        except json.JSONDecodeError as e:
            if e.msg == "nested too deeply":  # not a label list
                continue
            data = _python_literal(raw)
        labels = labels_from_json(data)
        if labels:
            return labels
    return None


def _python_literal(raw: str) -> Any:
    import ast

    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def default_labels(num_classes: int | None) -> tuple[list[str] | None, str]:
    """The built-in ImageNet list when the logits have 1000 classes, else none."""
    if num_classes == IMAGENET_CLASSES:
        return list(imagenet_labels()), "imagenet"
    return None, "none"


def builtin_labels(
    metadata: dict[str, str], num_classes: int | None
) -> tuple[list[str] | None, str]:
    """The labels a model comes with, whatever the user chose since: its metadata's, else the
    built-in list for its class count (what the app's "back to the model's labels" restores)."""
    labels = labels_from_metadata(metadata)
    return (labels, "metadata") if labels else default_labels(num_classes)
