"""The image views' runners: ``run_job`` runs every spec of ``fvdesk.core.inspect.specs``.

Importing this module registers them (``register_runner``, and ``PLANS`` for the views that
render).  Each runner opens the spec's image (refusing changed bytes), yields what it found as an
``InspectEvent`` and then one ``UnitDoneEvent`` per slot, and returns an ``InspectJobResult``.
Heat maps are computed without randomness and renders are the engine's seeded renders, so
``run_job(..., only=batch)`` gives a saved item's pixels back on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fvdesk.core.device import describe_device
from fvdesk.core.inspect import analysis as an
from fvdesk.core.inspect.image import InspectedImage, find_image, open_image, search_dirs
from fvdesk.core.inspect.objectives import Accentuation, MatchActivations
from fvdesk.core.inspect.results import InspectEvent, InspectJobResult, overlay
from fvdesk.core.inspect.specs import (
    AccentuateJob,
    AttributionJob,
    GridJob,
    GroupsJob,
    ImageJob,
    InversionJob,
)
from fvdesk.core.jobs.job import Job, Slot
from fvdesk.core.jobs.presentation import job_views
from fvdesk.core.jobs.run import PLANS, Plan, _chosen, _run_planned, register_runner
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.events import Event, JobResult, UnitDoneEvent, UnitResult
from fvdesk.core.optim.render import resolve_device
from fvdesk.core.optim.settings import RenderSettings, TransformSettings

Device = torch.device | str | None


def spec_image(model: LoadedModel, spec: Any) -> InspectedImage:
    """The spec's image, prepared for ``model`` (``ImageError`` when missing or changed)."""
    path = find_image(spec.image, spec.image_sha256, search_dirs())
    return open_image(path, model, sha256=spec.image_sha256)


def _setup(
    model: LoadedModel, job: Job, device: Device
) -> tuple[float, torch.device, InspectedImage]:
    t0 = time.perf_counter()
    job.settings.validate()
    job.spec.validate(model.graph)
    dev = resolve_device(device, job.settings)
    if model.device != dev:
        model.to(dev)
    return t0, dev, spec_image(model, job.spec)


def _maps(
    model: LoadedModel, job: Job, slots: Sequence[Slot], dev: torch.device,
    make: Callable[[Slot], tuple[int, float, np.ndarray, str | None]],
) -> Generator[Event, None, list[UnitResult]]:  # fmt: skip
    """One heat-map result per slot: ``make(slot) -> (unit, value, image, caption)``."""
    views = {v.slot: v for v in job_views(job, model.graph)}
    text = describe_device(dev)
    out = []
    for slot in slots:
        v = views[slot.index]
        unit, value, image, caption = make(slot)
        label = model.graph.unit_label(v.layer, unit, list(job.labels) if job.labels else None)
        ur = UnitResult(
            layer=v.layer, unit=unit, facet=v.facet, label=label if unit >= 0 else None,
            kind=v.kind, negative=False, value=float(value), image=image, dead=False,
            seed=job.settings.seed, steps=0, slot=slot.index, caption=caption or v.caption,
            provenance=job.provenance(slot, [slot.index], device=text),
        )  # fmt: skip
        out.append(ur)
        yield UnitDoneEvent(ur)
    return out


def _done(t0: float, dev: torch.device, results: list[UnitResult], data: list[Any],
          cancelled: bool = False) -> InspectJobResult:  # fmt: skip
    base = JobResult(results, cancelled, time.perf_counter() - t0, describe_device(dev))
    return InspectJobResult.of(base, data)


# ------------------------------------------------------------------------------------------------
# Heat-map views
# ------------------------------------------------------------------------------------------------
def _run_image(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
               only: Sequence[int] | None, device: Device) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The prediction, the layer's activations, and the heat maps of its top units."""
    t0, dev, img = _setup(model, job, device)
    spec: ImageJob = job.spec  # type: ignore[assignment]  # the runner registered for ImageJob
    data: list[Any] = []
    pred = an.predict(model, img, pre=job.preprocessing, labels=job.labels)
    if pred is not None:
        data.append(pred)
        yield InspectEvent(pred)  # type: ignore[misc]  # run_job passes InspectEvents on to the caller
    acts = an.layer_activations(model, img, spec.layer, pre=job.preprocessing, labels=job.labels)
    data.append(acts)
    yield InspectEvent(acts)  # type: ignore[misc]  # run_job passes InspectEvents on to the caller
    slots = [s for s in _chosen(spec, only) if s.index < len(acts.order)]

    def make(slot: Slot) -> tuple[int, float, np.ndarray, str | None]:
        u = int(acts.order[slot.index])
        cap = f"{spec.layer}:{u} (top {slot.index + 1})"
        return u, float(acts.values[u]), overlay(img.pixels, acts.heatmap(u)), cap

    results = yield from _maps(model, job, slots, dev, make)
    return _done(t0, dev, results, data)


def _run_attribution(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
                     only: Sequence[int] | None, device: Device) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The spatial attribution map (slot 0) and the channel ranking (the event's data)."""
    t0, dev, img = _setup(model, job, device)
    spec: AttributionJob = job.spec  # type: ignore[assignment]  # the runner registered for AttributionJob
    att = an.attribute(model, img, spec.target, spec.to_layer, method=spec.method,
                       steps=spec.steps, pre=job.preprocessing)  # fmt: skip
    yield InspectEvent(att)  # type: ignore[misc]  # run_job passes InspectEvents on to the caller

    def make(_slot: Slot) -> tuple[int, float, np.ndarray, str | None]:
        cap = f"{att.target} → {spec.to_layer}" + (" (IG)" if spec.method != "gradient" else "")
        return -1, att.value, overlay(img.pixels, att.heatmap), cap

    results = yield from _maps(model, job, _chosen(spec, only), dev, make)
    return _done(t0, dev, results, [att])


# ------------------------------------------------------------------------------------------------
# Views that render
# ------------------------------------------------------------------------------------------------
def _rendered(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
              slots: Sequence[int] | None, device: torch.device,
              start: Callable[[Sequence[Slot]], torch.Tensor] | None = None,
              ) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The spec's plan rendered like any job (``slots``: only these, in one batch)."""
    return (yield from _run_planned(model, job, cancelled, slots, device, start=start))


def _render_part(only: Sequence[int] | None, render: set[int]) -> list[int] | None | bool:
    """``only`` restricted to the render slots: None (all), a list, or False (none asked)."""
    if only is None:
        return None
    part = [i for i in only if i in render]
    return part if part else False


def _run_groups(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
                only: Sequence[int] | None, device: Device) -> Generator[Event, None, JobResult]:  # fmt: skip
    """Neuron groups: their maps (slots 0..k-1), then their factors rendered (k..2k-1)."""
    t0, dev, img = _setup(model, job, device)
    spec: GroupsJob = job.spec  # type: ignore[assignment]  # the runner registered for GroupsJob
    groups = an.neuron_groups(model, img, spec.layer, spec.groups, seed=spec.seed,
                              pre=job.preprocessing)  # fmt: skip
    yield InspectEvent(groups)  # type: ignore[misc]  # run_job passes InspectEvents on to the caller
    k = spec.groups
    maps = [s for s in _chosen(spec, only) if s.index < k]

    def make(slot: Slot) -> tuple[int, float, np.ndarray, str | None]:
        share = float(groups.maps[slot.index].sum() / max(groups.maps.sum(), 1e-12))
        return -1, share, overlay(img.pixels, groups.heatmap(slot.index)), None

    results = yield from _maps(model, job, maps, dev, make)
    part = _render_part(only, set(range(k, 2 * k)))
    cancelled_any = False
    if part is not False and not cancelled():
        r = yield from _rendered(model, job, cancelled, part, dev)  # type: ignore[arg-type]  # part is not False here, so a slot list or None
        results += r.results
        cancelled_any = r.cancelled
    return _done(t0, dev, results, [groups], cancelled_any)


def _plan_groups(model: LoadedModel, job: Job) -> Plan:
    spec: GroupsJob = job.spec  # type: ignore[assignment]  # the plan registered for GroupsJob
    img = spec_image(model, spec)
    groups = an.neuron_groups(model, img, spec.layer, spec.groups, seed=spec.seed,
                              pre=job.preprocessing)  # fmt: skip
    factors = torch.from_numpy(groups.factors)
    slots = spec.slots()[spec.groups :]

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        return obj.Direction(spec.layer, torch.stack([factors[s.facet] for s in chunk]))

    return Plan(slots, build, f"neuron groups of {spec.layer}", [])


def _run_grid(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
              only: Sequence[int] | None, device: Device) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The activation grid: what it found, then the non-blank cells rendered."""
    t0, dev, img = _setup(model, job, device)
    spec: GridJob = job.spec  # type: ignore[assignment]  # the runner registered for GridJob
    grid = an.activation_grid(model, img, spec.layer, threshold=spec.threshold,
                              pre=job.preprocessing)  # fmt: skip
    yield InspectEvent(grid)  # type: ignore[misc]  # run_job passes InspectEvents on to the caller
    if grid.shape != (spec.height, spec.width):
        from fvdesk.core.errors import RenderError

        raise RenderError(
            f"Layer {spec.layer} has a {grid.shape[1]}x{grid.shape[0]} grid on the image, not "
            f"the {spec.width}x{spec.height} the job was made for."
        )
    drawn = {y * spec.width + x for x, y in grid.cells()}
    part = _render_part(only, drawn)
    results: list[UnitResult] = []
    cancelled_any = False
    if part is not False:
        r = yield from _rendered(model, job, cancelled, part, dev)  # type: ignore[arg-type]  # part is not False here, so a slot list or None
        results, cancelled_any = r.results, r.cancelled
    return _done(t0, dev, results, [grid], cancelled_any)


def _plan_grid(model: LoadedModel, job: Job) -> Plan:
    spec: GridJob = job.spec  # type: ignore[assignment]  # the plan registered for GridJob
    img = spec_image(model, spec)
    grid = an.activation_grid(model, img, spec.layer, threshold=spec.threshold,
                              pre=job.preprocessing)  # fmt: skip
    cells = {y * spec.width + x: an.cell_direction(grid, x, y) for x, y in grid.cells()}
    slots = [s for s in spec.slots() if s.index in cells]

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        rows = torch.stack([torch.from_numpy(cells[s.index]) for s in chunk])
        return obj.Direction(spec.layer, rows)

    blank = spec.height * spec.width - len(slots)
    notes = [f"{blank} near-zero cell(s) of {spec.layer} left blank."] if blank else []
    return Plan(slots, build, f"the activation grid of {spec.layer}", notes)


def _run_accentuate(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
                    only: Sequence[int] | None, device: Device) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The units rendered from the image itself (the plan's objective keeps them near it)."""
    t0, dev, img = _setup(model, job, device)
    x = an.image_tensor(model, img)
    r = yield from _rendered(model, job, cancelled, only, dev,
                             start=lambda chunk: x.expand(len(chunk), -1, -1, -1))  # fmt: skip
    return _done(t0, dev, r.results, [], r.cancelled)


def _plan_accentuate(model: LoadedModel, job: Job) -> Plan:
    spec: AccentuateJob = job.spec  # type: ignore[assignment]  # the plan registered for AccentuateJob
    img = spec_image(model, spec)
    x = an.image_tensor(model, img)
    layers = [spec.layer] + ([spec.penalty_layer] if spec.penalty_layer else [])
    with torch.no_grad():
        acts = an.activations(model, x, layers, job.preprocessing)
        every = {k: v.expand(len(spec.units), *v.shape[1:]) for k, v in acts.items()}
        v0 = obj.Unit(spec.layer, spec.kind, list(spec.units))(every).abs().clamp_min(1e-3)  # type: ignore[arg-type]  # the spec's kind str is one of Unit's kinds (validated)
    by_unit = dict(zip(spec.units, v0.cpu(), strict=True))
    target = acts[spec.penalty_layer] if spec.penalty_layer else x

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        unit = obj.Unit(spec.layer, spec.kind, [s.unit for s in chunk])  # type: ignore[arg-type]  # the spec's kind str is one of Unit's kinds (validated)
        scale = torch.stack([by_unit[s.unit] for s in chunk])
        return Accentuation(unit, target, spec.weight, scale, spec.penalty_layer)

    where = spec.penalty_layer or "pixels"
    return Plan(
        spec.slots(), build, f"{spec.layer} accentuated (kept near the image in {where})", []
    )


def _plan_inversion(model: LoadedModel, job: Job) -> Plan:
    spec: InversionJob = job.spec  # type: ignore[assignment]  # the runner registered for InversionJob
    img = spec_image(model, spec)
    with torch.no_grad():
        t = an.activations(model, an.image_tensor(model, img), [spec.layer], job.preprocessing)
    target = t[spec.layer].float()

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        return MatchActivations(spec.layer, target, spec.cosine_power)

    return Plan(spec.slots(), build, spec.title, [], inversion_settings(job.settings))


#: The transforms an inversion renders under: its target is the image's activations *at each
#: position*, which jitters wider than a pixel or two, scales and rotations would misalign.
INVERSION_TRANSFORMS = TransformSettings(pad=0, jitter=1, scales=None, angles=None, jitter2=0)


def inversion_settings(settings: RenderSettings) -> RenderSettings:
    """``settings`` with the transforms an inversion needs (``INVERSION_TRANSFORMS``), unless
    the job asked for none at all."""
    if settings.transforms is None:
        return settings
    return replace(settings, transforms=INVERSION_TRANSFORMS)


def _run_inversion(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
                   only: Sequence[int] | None, device: Device) -> Generator[Event, None, JobResult]:  # fmt: skip
    t0, dev, _img = _setup(model, job, device)
    r = yield from _rendered(model, job, cancelled, only, dev)
    return _done(t0, dev, r.results, [], r.cancelled)


register_runner(ImageJob, _run_image)
register_runner(AttributionJob, _run_attribution)
register_runner(GroupsJob, _run_groups)
register_runner(GridJob, _run_grid)
register_runner(AccentuateJob, _run_accentuate)
register_runner(InversionJob, _run_inversion)
PLANS[GroupsJob] = _plan_groups
PLANS[GridJob] = _plan_grid
PLANS[AccentuateJob] = _plan_accentuate
PLANS[InversionJob] = _plan_inversion


__all__ = ["spec_image"]
