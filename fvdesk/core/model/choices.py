"""The user's choices for a model: its preprocessing, its class labels and its image input, each
with where it came from.

One precedence for all of them, in the loader, the CLI and the app: the user's explicit choice
(a flag or a pick in the app, else the one saved in the sidecar ``MODEL.fvdesk.json``) wins over
what the model's metadata says, which wins over fvdesk's default (the ``imagenet`` preset;
ImageNet's class names for a 1000-class output, else none).  ``source`` says which is in force
(``SOURCES`` words it for people); the status bar, the settings dock and ``fvdesk info`` show it.

``Choices`` is plain, immutable data (no torch).  The app holds the choices in force and every
job captures them when it is built (``Job.for_model(..., choices=)``), so a choice never changes
a model the render thread holds, nor a job already queued.  Scripts and the CLI, which hold their
model alone, make choices the model's own between tasks with ``LoadedModel.use``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fvdesk.core.model import sidecar
from fvdesk.core.model.labels import builtin_labels, read_labels_file
from fvdesk.core.model.preprocessing import Preprocessing, parse_preprocessing

#: Where a choice in force came from, as people read it.
SOURCES: dict[str, str] = {
    "user": "your choice",
    "sidecar": "saved choice (sidecar)",
    "metadata": "model metadata",
    "default": "default: the model does not say",
    "imagenet": "built-in ImageNet-1k names (1000 classes)",
    "none": "none",
}


def first_choice(user: Any, saved: Any, metadata: Any, default: Any) -> Any:
    """The precedence itself: the first of ``user``, ``saved``, ``metadata``, ``default`` that is
    not ``None`` (each already tagged with its source).  A callable is called only when reached
    (a model's metadata is not read when the user has chosen)."""
    for option in (user, saved, metadata):
        value = option() if callable(option) else option
        if value is not None:
            return value
    return default() if callable(default) else default


@dataclass(frozen=True)
class Choices:
    """The preprocessing, labels and image input in force for one model, with their sources."""

    preprocessing: Preprocessing
    labels: tuple[str, ...] | None = None
    labels_source: str = "none"
    labels_file: str = ""  # the labels file chosen (this run or saved), when there is one
    input_name: str = ""
    input_source: str = "default"  # user (flag), sidecar, or default (the only candidate)

    @classmethod
    def of(cls, model: Any) -> Choices:
        """The choices a ``LoadedModel`` was loaded with (or last given by ``use``)."""
        labels = tuple(model.labels) if model.labels else None
        return cls(model.preprocessing, labels, str(model.labels_source),
                   str(getattr(model, "labels_file", "") or ""), str(model.input.name),
                   str(getattr(model, "input_source", "default")))  # fmt: skip

    # -- the user's explicit choices -------------------------------------------------------------
    def with_preprocessing(self, pre: Preprocessing | str | dict) -> Choices:
        """The user's preprocessing (a preset name, the JSON form, or values): it wins."""
        if not isinstance(pre, Preprocessing):
            pre = parse_preprocessing(pre, "user", "The preprocessing choice")
        return replace(self, preprocessing=replace(pre, source="user"))

    def with_labels_file(self, path: str | Path) -> Choices:
        """The class names in ``path`` (txt or JSON; ``ConfigError`` naming the file): they win."""
        labels = read_labels_file(path)
        return replace(self, labels=tuple(labels), labels_source="user", labels_file=str(path))

    def with_own_labels(self, metadata: dict[str, str], num_classes: int | None) -> Choices:
        """Back to the labels the model comes with (its metadata's, else the default)."""
        labels, source = builtin_labels(metadata, num_classes)
        return replace(self, labels=tuple(labels) if labels else None, labels_source=source,
                       labels_file="")  # fmt: skip

    def remember(self, model_path: str | Path, *, preprocessing: bool = False,
                 labels: bool = False, input_name: bool = False) -> Path:  # fmt: skip
        """Save the named choices in the sidecar beside the model (atomically; ``ConfigError``
        when it cannot be written).  Labels the user went back from are forgotten there."""
        forget = ("labels",) if labels and not self.labels_file else ()
        return sidecar.save_sidecar(
            model_path,
            preprocessing=self.preprocessing if preprocessing else None,
            labels=Path(self.labels_file).resolve() if labels and self.labels_file else None,
            input_name=self.input_name if input_name and self.input_name else None,
            forget=forget,
        )

    # -- what is in force ------------------------------------------------------------------------
    def label_list(self) -> list[str] | None:
        return list(self.labels) if self.labels else None

    def label_of(self, graph: Any, layer: str, unit: int) -> str | None:
        """The class name of a unit under these labels (the core's rule, ``unit_label``)."""
        return graph.unit_label(layer, unit, self.label_list())

    def describe(self) -> str:
        """``preprocessing unit (your choice); 8 labels (model metadata)``: what is in force."""
        pre = self.preprocessing
        n = len(self.labels or ())
        labels = f"{n} labels ({SOURCES.get(self.labels_source, self.labels_source)})" if n else (
            "no labels")  # fmt: skip
        return f"preprocessing {pre.preset} ({SOURCES.get(pre.source, pre.source)}); {labels}"


def resolve_labels(
    saved: Sequence[str] | None, metadata: Sequence[str] | None, num_classes: int | None
) -> tuple[list[str] | None, str]:
    """Labels by the one precedence: the sidecar's (the user's), the metadata's, the default."""
    from fvdesk.core.model.labels import default_labels

    return first_choice(None, (list(saved), "sidecar") if saved else None,
                        (list(metadata), "metadata") if metadata else None,
                        lambda: default_labels(num_classes))  # fmt: skip


__all__ = ["Choices", "SOURCES", "first_choice", "resolve_labels"]
