"""``render`` and ``render_units``: the jobs ``fvdesk render`` builds, driven as it drives them.

An objective (``--objective EXPR``) becomes a ``CombinationJob``, units of a layer (``--layer
--units``) a ``UnitJob``; settings are the engine's defaults overridden by keywords named like
the render flags (``steps=8, size=32, param="pixel", no_transforms=True``), built by the same
function as the flags.  The job runs through ``run_job`` and ``drive``; with ``out`` each
finished batch is committed to a gallery as ``--out`` does, so an interrupted run keeps what
finished.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from argparse import Namespace
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from fvdesk.api._galleries import GalleryView, RenderedImage, _Images, save_gallery
from fvdesk.api._model import Model
from fvdesk.api._objectives import Objective, objective
from fvdesk.cli.common import render_settings
from fvdesk.core.device import describe_device, pick_device
from fvdesk.core.errors import ConfigError
from fvdesk.core.jobs.job import CombinationJob, Job, JobSpec, UnitJob, default_kind
from fvdesk.core.jobs.run import run_job
from fvdesk.core.optim import options
from fvdesk.core.optim.drive import CancelFlag, drive
from fvdesk.core.optim.events import JobResult
from fvdesk.core.optim.settings import RenderSettings, TransformSettings
from fvdesk.core.output.atlas import BatchCommitter
from fvdesk.core.output.gallery import Gallery, GalleryItem, ModelInfo

__all__ = ["RenderSettings", "Renders", "TransformSettings", "render", "render_units"]

#: Keywords that are settings: the engine's options plus the flags that shape the chain.
SETTING_NAMES: frozenset[str] = frozenset(
    {o.name for o in options.OPTIONS} | {"no_transforms", "color_from"}
)
EventHandler = Callable[[Any], None]


class Renders(_Images):
    """The images of one render, in slot order (each a ``RenderedImage``), with the job that made
    them; shows itself as a contact sheet or a captioned table, ``save()`` makes it a gallery."""

    def __init__(self, model: Model, job: Job, result: JobResult, folder: Path | None) -> None:
        self.model = model
        self.job = job
        self.title = job.title
        self.results = list(result.results)
        self.cancelled = bool(result.cancelled)
        self.seconds = float(result.seconds)
        self.device = str(result.device)
        self.folder = folder
        self._images = [RenderedImage(GalleryItem.from_result(r, device=self.device), r.image)
                        for r in self.results]  # fmt: skip

    @property
    def settings(self) -> RenderSettings:
        """The settings the job ran with."""
        return self.job.settings

    def save(self, folder: str | os.PathLike[str], *, title: str = "") -> GalleryView:
        """Save the images as a gallery (see ``save_gallery``) and read it back."""
        return save_gallery(folder, self, title=title)

    def __repr__(self) -> str:
        where = f" in {self.folder}" if self.folder is not None else ""
        stop = ", cancelled" if self.cancelled else ""
        return f"<fvdesk.Renders {self.title}: {len(self)} image(s){where}{stop}>"


def render(
    model: Model,
    target: str | Objective | JobSpec,
    *,
    facets: int = 1,
    negative: bool = False,
    settings: RenderSettings | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str | None = None,
    on_event: EventHandler | None = None,
    cancel: CancelFlag = None,
    **setting_values: Any,
) -> Renders:
    """Render an objective: an expression (``"L:12 + 0.5*L:40"``), an ``Objective``, or any core
    ``JobSpec`` (its own facets and sign then apply).

    ``facets`` images are made diverse; ``negative`` minimizes.  Settings: ``settings`` (default
    the engine's) with keywords named like the render flags on top (``steps=8, size=32``).
    ``out`` commits each finished batch to that gallery folder.  ``on_event`` sees every engine
    event (steps, previews, notices, finished images); ``cancel`` (a ``threading.Event`` or a
    callable) stops the render early.  Raises the core's one-sentence errors (``ConfigError``,
    ``RenderError``, ``GalleryError``).
    """
    if isinstance(target, JobSpec):
        if facets != 1 or negative:
            raise ConfigError("A job spec carries its own facets and sign; set them on the spec.")
        spec = target
    else:
        goal = target if isinstance(target, Objective) else objective(target)
        spec = CombinationJob(goal.terms(model), negative=negative, facets=facets)
    return _run(model, spec, settings, setting_values, out=out, device=device,
                on_event=on_event, cancel=cancel)  # fmt: skip


def render_units(
    model: Model,
    layer: str,
    units: int | Sequence[int] | None = None,
    *,
    kind: str | None = None,
    facets: int = 1,
    negative: bool = False,
    x: int | None = None,
    y: int | None = None,
    settings: RenderSettings | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str | None = None,
    on_event: EventHandler | None = None,
    cancel: CancelFlag = None,
    **setting_values: Any,
) -> Renders:
    """Render units of one layer, ``facets`` images each (``fvdesk render --layer --units``).

    ``units``: one, several, or ``None`` for all; ``kind``: ``channel``, ``neuron`` (at ``x,
    y``, default the centre), ``deepdream`` (the whole layer; no units), ``logit`` or ``prob``
    (default: the layer's natural kind).  The other arguments are ``render``'s.
    """
    lay = model.layer(layer)
    kind = kind or default_kind(lay)
    if kind == "deepdream":
        chosen: tuple[int, ...] = ()
    elif units is None:
        chosen = tuple(range(lay.channels))
    else:
        chosen = (units,) if isinstance(units, int) else tuple(units)
    spec = UnitJob(lay.name, chosen, kind=kind, negative=negative, facets=facets, x=x, y=y)
    return _run(model, spec, settings, setting_values, out=out, device=device,
                on_event=on_event, cancel=cancel)  # fmt: skip


def make_settings(model: Model, settings: RenderSettings | None, values: dict[str, Any],
                  device: Any) -> RenderSettings:  # fmt: skip
    """``settings`` (or the defaults) with ``values`` by flag name, as the render flags build
    them; an explicit ``size`` the model cannot take is refused, not rounded."""
    unknown = sorted(set(values) - SETTING_NAMES)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(SETTING_NAMES), n=1)
        hint = f"did you mean {near[0]!r}" if near else "they are named like the render flags"
        raise ConfigError(f"{unknown[0]!r} is not a render setting; {hint} (steps, size, lr, ...).")
    base = {} if settings is None else {f.name: getattr(settings, f.name) for f in fields(settings)}
    base["device"] = str(device)
    try:
        out = render_settings(Namespace(**values), **base)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Bad render settings: {e}.") from None
    if out.size is not None:
        refusal = model.loaded.input.size_refusal(out.size, model.name)
        if refusal is not None:
            raise ConfigError(f"The size {out.size} does not fit: {refusal}")
    return out


def _run(model: Model, spec: JobSpec, settings: RenderSettings | None, values: dict[str, Any], *,
         out: str | os.PathLike[str] | None, device: str | None, on_event: EventHandler | None,
         cancel: CancelFlag) -> Renders:  # fmt: skip
    spec.validate(model.loaded.graph)
    dev = model.device if device is None else pick_device(str(device))
    job = Job.for_model(model.loaded, spec, make_settings(model, settings, values, dev))
    committer = None
    if out is not None:
        dev_text = describe_device(dev)
        gallery = Gallery.open(out, ModelInfo.from_model(model.loaded), title=job.title,
                               device=dev_text)  # fmt: skip
        committer = BatchCommitter(gallery, device=dev_text)

    def handle(ev: Any) -> None:
        if committer is not None and not committer.offer(ev):
            committer.flush()  # a batch is complete once another event follows it
        if on_event is not None:
            on_event(ev)

    try:
        result = drive(run_job(model.loaded, job, cancel, device=dev), handle)
    except BaseException:  # Ctrl+C or an error: keep the batches that finished
        if committer is not None:
            with contextlib.suppress(Exception):
                committer.flush()
        raise
    if committer is not None:
        committer.flush()
        committer.gallery.finalize(prune=True)
    return Renders(model, job, result, Path(out) if out is not None else None)
