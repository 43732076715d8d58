"""``examples``: what units respond to in a folder of the user's images (``fvdesk examples``).

The same ``ExamplesJob`` the command builds, driven the same way (cached per model,
preprocessing and folder, so a second call is quick); ``Examples.save`` writes the gallery
``fvdesk examples --out`` writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fvdesk.api._galleries import GalleryView, open_gallery
from fvdesk.api._model import Model
from fvdesk.api._rendering import EventHandler
from fvdesk.cli.examples_cmd import _pre_record
from fvdesk.core.dataset.examples import UnitExamples
from fvdesk.core.device import describe_device
from fvdesk.core.errors import ConfigError
from fvdesk.core.jobs.job import ExamplesJob, Job
from fvdesk.core.jobs.passes import ExamplesResult
from fvdesk.core.jobs.run import run_job
from fvdesk.core.optim.drive import CancelFlag, drive
from fvdesk.core.output.examples import write_examples_gallery
from fvdesk.core.output.gallery import ModelInfo
from fvdesk.core.output.html import esc

__all__ = ["Examples", "examples"]

#: Units a notebook table lists per layer before "and N more".
TABLE_UNITS = 32


def examples(
    model: Model,
    images: str | os.PathLike[str],
    layer: str | Sequence[str],
    *,
    kind: str = "channel",
    position: tuple[int, int] | None = None,
    top: int = 9,
    bottom: int = 9,
    batch: int = 32,
    engine: str = "auto",
    on_event: EventHandler | None = None,
    cancel: CancelFlag = None,
) -> Examples:
    """Run the images under ``images`` through ``model`` and keep, per unit of ``layer`` (one
    name or several), the ``top`` images that excite it most and the ``bottom`` least.

    ``kind`` ``channel`` ranks by the unit's spatial maximum, ``neuron`` by its value at
    ``position`` (x, y; default the centre).  ``engine``: ``auto``, ``torch`` or
    ``onnxruntime``.  Raises ``DatasetError`` naming the folder when it holds no usable image,
    ``RenderError`` for a layer the model lacks.
    """
    names = (layer,) if isinstance(layer, str) else tuple(layer)
    targets = tuple(model.layer(n).name for n in names)
    x, y = position if position is not None else (None, None)
    spec = ExamplesJob(str(images), targets, kind=kind, x=x, y=y, top=top, bottom=bottom,
                       batch=batch, engine=engine)  # fmt: skip
    spec.validate(model.loaded.graph)
    job = Job.for_model(model.loaded, spec)
    result: Any = drive(run_job(model.loaded, job, cancel, device=model.device), on_event)
    return Examples(model, result, top=top, bottom=bottom)


class Examples:
    """The result of ``examples``: each layer's units with their top and bottom images."""

    def __init__(self, model: Model, result: ExamplesResult, *, top: int, bottom: int) -> None:
        self.model = model
        self.result = result
        self.top = top
        self.bottom = bottom

    @property
    def layers(self) -> list[str]:
        """The layers measured, in the order asked."""
        return list(self.result.layers)

    @property
    def count(self) -> int:
        """How many images were usable."""
        return int(self.result.images)

    @property
    def summary(self) -> str:
        """``1,203 images, 4 skipped: a.jpg (truncated image data), ...``."""
        return self.result.summary()

    def unit(self, unit: int, layer: str | None = None) -> UnitExamples:
        """Unit ``unit`` of ``layer`` (default: the only or first layer): ``.top`` and
        ``.bottom`` examples (each ``.rel`` path, ``.value``, ``.source_box``), histogram."""
        lay = self.result.layers[self._layer(layer)]
        if not 0 <= unit < lay.units:
            raise ConfigError(
                f"Unit {unit} does not exist: layer {lay.layer} has {lay.units} units."
            )
        return lay.unit(unit, top=self.top, bottom=self.bottom)

    def save(self, folder: str | os.PathLike[str], units: Sequence[int] | None = None, *,
             layer: str | None = None) -> GalleryView:  # fmt: skip
        """Write the examples of ``units`` (default all) of ``layer`` as a gallery, as
        ``fvdesk examples --out`` does, and read it back."""
        name = self._layer(layer)
        lay = self.result.layers[name]
        chosen = list(range(lay.units)) if units is None else [int(u) for u in units]
        for u in chosen:
            self.unit(u, name)
        loaded = self.model.loaded
        write_examples_gallery(
            Path(folder), ModelInfo.from_model(loaded), lay, chosen,
            labels=lambda u: self.model.label(name, u),
            top=self.top, bottom=self.bottom, preprocessing=_pre_record(loaded),
            device=describe_device(loaded.device),
        )  # fmt: skip
        return open_gallery(folder)

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            return self.layers[0]
        if layer not in self.result.layers:
            raise ConfigError(
                f"These examples are of {', '.join(self.layers)}, not of {layer!r}; pass one of "
                "those."
            )
        return layer

    def __repr__(self) -> str:
        return (
            f"<fvdesk.Examples of {', '.join(self.layers)} in {self.result.root}: {self.summary}>"
        )

    def _repr_html_(self) -> str:
        """Per unit: its name (and class) and its three most exciting images with their values."""
        rows = []
        for name in self.layers:
            lay = self.result.layers[name]
            for u in range(min(lay.units, TABLE_UNITS)):
                ux = lay.unit(u, top=3, bottom=0)
                label = self.model.label(name, u)
                head = f"{name}:{u}" + (f" {label}" if label else "")
                tops = ", ".join(f"{ex.rel} ({ex.value:.3g})" for ex in ux.top)
                rows.append(f"<tr><td><code>{esc(head)}</code></td><td>{esc(tops)}</td></tr>")
            if lay.units > TABLE_UNITS:
                rows.append(f"<tr><td colspan=2>… and {lay.units - TABLE_UNITS} more units of "
                            f"{esc(name)}</td></tr>")  # fmt: skip
        return (
            f"<p>Dataset <code>{esc(str(self.result.root))}</code>: {esc(self.summary)}</p>"
            f"<table><tr><th>unit</th><th>most exciting</th></tr>{''.join(rows)}</table>"
        )
