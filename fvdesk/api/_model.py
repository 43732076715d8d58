"""``load_model`` and ``Model``: a model for scripts, with the user's choices applied as the
command line applies them (``--preprocess``, ``--labels``, ``--input-size``, ``--input``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fvdesk.core.device import pick_device
from fvdesk.core.errors import ConfigError
from fvdesk.core.model.layers import Layer, format_shape
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.loader import load_model as _load
from fvdesk.core.model.preprocessing import PRESETS, Preprocessing, parse_preprocessing
from fvdesk.core.model.sidecar import parse_input_size
from fvdesk.core.output.html import esc
from fvdesk.core.resources import demo_model_path

__all__ = ["PRESETS", "Model", "Preprocessing", "demo_model_path", "load_model"]

PreprocessingChoice = Preprocessing | str | Mapping[str, Any] | None


def load_model(
    path: str | os.PathLike[str] | None = None,
    *,
    preprocessing: PreprocessingChoice = None,
    labels: str | os.PathLike[str] | None = None,
    input_size: int | tuple[int, int] | str | None = None,
    input_name: str | None = None,
    device: str = "auto",
    check_parity: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> Model:
    """Load, repair and convert an ONNX image classifier (the demo model when ``path`` is None).

    ``preprocessing``: a preset name (``PRESETS``), JSON text or a mapping like
    ``{"range": [0, 255], "mean": [...], "bgr": True}``, or a ``Preprocessing``; ``None`` keeps
    the model's own (sidecar, metadata, else ImageNet).  ``labels``: a class-names file for this
    session.  ``input_size``: ``224``, ``(48, 320)`` or ``"48x320"`` for a size-agnostic graph.
    Nothing is written next to the model.  Raises ``ModelLoadError`` (bad file) or
    ``ConfigError`` (bad choice), one sentence each.
    """
    where = Path(path) if path is not None else demo_model_path()
    loaded = _load(
        where,
        device=pick_device(device),
        progress=progress,
        input_name=input_name,
        preprocessing=_preprocessing(preprocessing),
        check_parity=check_parity,
        input_size=_input_size(input_size),
    )
    if labels is not None:
        loaded.set_labels(Path(labels), persist=False)
    return Model(loaded)


def _preprocessing(value: PreprocessingChoice) -> Preprocessing | str | None:
    if isinstance(value, Mapping):
        return parse_preprocessing(dict(value), "user", "The preprocessing argument")
    return value


def _input_size(value: int | tuple[int, int] | str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_input_size(list(value) if isinstance(value, tuple) else value)
    except ValueError:
        raise ConfigError(
            f"The input size {value!r} is not a size: give (height, width), 'HxW' or one "
            "number, 8 to 4096 px."
        ) from None


class Model:
    """A loaded model: its layers, labels, preprocessing and input, for ``render``,
    ``render_units`` and ``examples``.  ``loaded`` is the core's ``LoadedModel`` for what this
    surface does not cover (it may change between releases; this class does not)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    @property
    def name(self) -> str:
        """The model's file name."""
        return self.loaded.name

    @property
    def path(self) -> Path:
        """Where the model file is."""
        return Path(self.loaded.path)

    @property
    def sha256(self) -> str:
        """The file's hash: what galleries and provenance records compare."""
        return str(self.loaded.sha256)

    @property
    def device(self) -> Any:
        """The torch device the model is on (renders run there unless told otherwise)."""
        return self.loaded.device

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing in force, and (``.source``) where it came from."""
        return self.loaded.preprocessing

    @property
    def labels(self) -> list[str] | None:
        """The class names in force, if any."""
        return list(self.loaded.labels) if self.loaded.labels else None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model is shown and probed at."""
        return int(self.loaded.input.height), int(self.loaded.input.width)

    @property
    def layers(self) -> list[Layer]:
        """The renderable layers in graph order (``.name``, ``.op``, ``.shape``, ``.channels``,
        ``.kind``)."""
        return list(self.loaded.graph)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; ``RenderError`` with the nearest names when there is none."""
        return self.loaded.graph[name]

    def label(self, layer: str, unit: int) -> str | None:
        """The class name of ``unit`` of ``layer`` (only on class layers), as captions show it."""
        return self.loaded.graph.unit_label(layer, unit, self.loaded.labels)

    def __repr__(self) -> str:
        h, w = self.input_size
        return (
            f"<fvdesk.Model {self.name}: {len(self.loaded.graph)} layers, input {h}x{w}, "
            f"preprocessing {self.preprocessing.preset} ({self.preprocessing.source})>"
        )

    def _repr_html_(self) -> str:
        """A notebook's view: what the model is and its layers as a table."""
        logits = self.loaded.graph.logits_name
        rows = "".join(
            f"<tr><td><code>{esc(x.name)}</code></td><td>{esc(x.op)}</td>"
            f"<td>{esc(format_shape(x.shape, batch=True, sep='x'))}</td><td>{x.channels}</td>"
            f"<td>{esc(x.kind)}{' (logits)' if x.name == logits else ''}</td></tr>"
            for x in self.loaded.graph
        )
        return (
            f"<p><b>{esc(self.name)}</b>: {esc(self.loaded.input.describe_size())}, "
            f"preprocessing {esc(self.preprocessing.describe())}</p>"
            "<table><tr><th>layer</th><th>op</th><th>shape</th><th>units</th><th>kind</th></tr>"
            f"{rows}</table>"
        )
