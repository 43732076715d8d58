"""Running jobs: ``run_job`` turns any ``Job`` into engine batches, results and provenance.

Each spec type has a *plan*: how its slots become objectives batch by batch (``PLANS``).  Spec
types with an execution of their own (no plain objective: dataset passes, settings sweeps)
register a runner with ``register_runner``; every runner yields the same events and returns a
``JobResult``, so the app, the CLI and the atlas drive them all alike.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from fvdesk.core.device import describe_device
from fvdesk.core.errors import RenderError
from fvdesk.core.jobs.job import (
    ClusterJob,
    CombinationJob,
    DirectionJob,
    ExamplesJob,
    InterpolationJob,
    Job,
    JobSpec,
    Slot,
    SpectrumJob,
    SteepestJob,
    Term,
    UnitJob,
    combination_caption,
)
from fvdesk.core.jobs.passes import run_examples
from fvdesk.core.jobs.presentation import SlotView, job_views
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.drive import CancelFlag, cancel_fn
from fvdesk.core.optim.events import (
    Event,
    JobResult,
    NoticeEvent,
    PreviewEvent,
    StepEvent,
    UnitDoneEvent,
    UnitResult,
)
from fvdesk.core.optim.param import INTERPOLATION_SHARED
from fvdesk.core.optim.parameterizations import make_param, pin_settings
from fvdesk.core.optim.quality import high_frequency_share
from fvdesk.core.optim.render import (
    BatchDone,
    canvas_size,
    image_seed,
    render_batches,
    resolve_device,
)
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.steepest import first_step, step_image
from fvdesk.core.optim.variants import variant, variant_settings

Runner = Callable[..., Generator[Event, None, JobResult]]


@dataclass
class Plan:
    """How a spec renders: its slots and the objective of a batch of them.  How its images are
    named and filed is the spec's presentation (``fvdesk.core.jobs.presentation``)."""

    slots: list[Slot]
    build: Callable[[Sequence[Slot]], obj.Objective]
    what: str  # names the objective in messages
    notices: list[str]
    settings: RenderSettings | None = None  # what the spec needs instead of the job's settings


PLANS: dict[type[JobSpec], Callable[[LoadedModel, Job], Plan]] = {}
RUNNERS: dict[type[JobSpec], Runner] = {}


def register_runner(spec_type: type[JobSpec], runner: Runner) -> None:
    """Let ``run_job`` run ``spec_type`` with ``runner(model, job, cancelled, only, device)``."""
    RUNNERS[spec_type] = runner


def _runner_from_module(spec_type: type[JobSpec]) -> Runner | None:
    """The runner of a spec whose (torch-free) module cannot import its runner: the spec names
    the module that registers it (``runner_module``), imported on first use, so every front end
    runs and reproduces it without knowing where it lives."""
    module = getattr(spec_type, "runner_module", "")
    if not module:
        return None
    importlib.import_module(module)
    return RUNNERS.get(spec_type)


def run_job(
    model: LoadedModel,
    job: Job,
    cancel: CancelFlag = None,
    *,
    only: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> Generator[Event, None, JobResult]:
    """Render ``job`` on ``model``: engine events plus a ``UnitDoneEvent`` per finished image.

    ``only`` renders just those slots, in one batch (how a provenance record's batch is
    reproduced).  ``device`` overrides ``job.settings.device``.
    """
    if job.model.sha256 and job.model.sha256 != model.sha256:
        raise RenderError(
            f"This job was made for {job.model.file} (sha256 {job.model.sha256[:12]}…), "
            f"not for {model.name}."
        )
    uses_maco = isinstance(job.spec, SpectrumJob) and "maco" in job.spec.variants
    job = replace(job, settings=pin_settings(job.settings, maco=uses_maco))
    runner = RUNNERS.get(type(job.spec)) or _runner_from_module(type(job.spec)) or _run_planned
    return (yield from runner(model, job, cancel_fn(cancel), only, device))


def _run_planned(
    model: LoadedModel,
    job: Job,
    cancelled: Callable[[], bool],
    only: Sequence[int] | None,
    device: torch.device | str | None,
    start: Callable[[Sequence[Slot]], torch.Tensor | None] | None = None,
) -> Generator[Event, None, JobResult]:
    t0 = time.perf_counter()
    job.settings.validate()
    job.spec.validate(model.graph)
    plan = PLANS[type(job.spec)](model, job)
    settings = plan.settings or job.settings
    dev = resolve_device(device, settings)
    for n in plan.notices:
        yield NoticeEvent(n)
    slots, per = plan.slots, settings.batch
    if only is not None:
        wanted = {int(i) for i in only}
        slots = [s for s in slots if s.index in wanted]
        if len(slots) != len(wanted):
            raise RenderError(f"The job has no image {sorted(wanted - {s.index for s in slots})}.")
        per = len(slots)
    by_id = {s.index: s for s in slots}
    views = {v.slot: v for v in job_views(job, model.graph)}
    results: list[UnitResult] = []
    cancelled_any = False
    text = describe_device(dev)
    for ev in render_batches(
        model, slots, plan.build, settings, per=per, device=dev, cancelled=cancelled,
        pre=job.preprocessing, what=lambda: plan.what, start=start,
    ):  # fmt: skip
        if not isinstance(ev, BatchDone):
            yield ev
            continue
        out = ev.out
        r = out.result
        values = out.main_values if out.main_values is not None else r.values
        share = r.seconds / max(1, len(out.slots))
        for k, sid in enumerate(out.slots):
            slot, view = by_id[sid], views[sid]
            value = float(values[k])
            ur = UnitResult(
                **_filed(view),
                value=-value if view.negative and view.kind != "combination" else value,
                image=r.images[k],
                dead=sid in r.dead,
                seed=settings.seed,
                steps=r.steps_done,
                cancelled=r.cancelled,
                seconds=share,
                provenance=job.provenance(slot, out.slots, device=text),
            )
            results.append(ur)
            yield UnitDoneEvent(ur)
        cancelled_any = cancelled_any or r.cancelled
    return JobResult(results, cancelled_any, time.perf_counter() - t0, text)


def _filed(view: SlotView) -> dict[str, Any]:
    """The ``UnitResult`` fields a slot's view decides (what it is filed under and named)."""
    return {"layer": view.layer, "unit": view.unit, "facet": view.facet, "label": view.label,
            "kind": view.kind, "negative": view.negative, "slot": view.slot,
            "caption": view.caption}  # fmt: skip


def diversity_layer(model: LoadedModel, layer: str) -> str:
    """Where facets are compared: the layer itself, or the last feature map before a vector."""
    lay = model.graph[layer]
    if lay.kind in ("feature", "tokens"):  # maps (token layers are handed out as patch maps)
        return layer
    before = [x for x in model.graph if x.kind in ("feature", "tokens") and x.index < lay.index]
    return before[-1].name if before else layer


def _groups(chunk: Sequence[Slot]) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for k, s in enumerate(chunk):
        out.setdefault(s.group, []).append(k)
    return list(out.values())


def _diverse(
    model: LoadedModel, spec: UnitJob | CombinationJob | DirectionJob, layer: str, slots: list[Slot]
) -> tuple[list[Slot], str | None, list[str]]:
    """Drop the coupling when the model cannot batch a unit's facets (with a notice)."""
    if not spec.coupled:
        return slots, None, []
    mb = model.input.max_batch
    if mb is not None and mb < spec.facets:
        loose = [replace(s, group=s.index) for s in slots]
        note = (
            f"This model only accepts batch {mb}: facets are rendered without the diversity term."
        )
        return loose, None, [note]
    return slots, spec.diversity_layer or diversity_layer(model, layer), []


def _signed_diverse(
    main: obj.Objective, spec: Any, div_layer: str | None, chunk: Sequence[Slot]
) -> obj.Objective:
    """``main`` negated for negative specs, with the diversity term when facets are coupled."""
    if spec.negative:
        main = -main
    if div_layer is None:
        return main
    return obj.with_diversity(main, div_layer, spec.diversity_weight, _groups(chunk))


def _plan_units(model: LoadedModel, job: Job) -> Plan:
    spec: UnitJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    slots, div_layer, notices = _diverse(model, spec, spec.layer, spec.slots())

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        if spec.kind == "deepdream":
            main: obj.Objective = obj.deepdream(spec.layer)
        else:
            units = [s.unit for s in chunk]
            main = obj.Unit(spec.layer, spec.kind, units, x=spec.x, y=spec.y)  # type: ignore[arg-type]  # a unit job's kind is one of Unit's
        return _signed_diverse(main, spec, div_layer, chunk)

    return Plan(slots, build, f"{spec.kind}({spec.layer}) with diversity", notices)


def _plan_combination(model: LoadedModel, job: Job) -> Plan:
    spec: CombinationJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    first = spec.terms[0].layer
    slots, div_layer, notices = _diverse(model, spec, first, spec.slots())
    text = combination_caption(spec.terms)

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        return _signed_diverse(terms_objective(spec.terms), spec, div_layer, chunk)

    return Plan(slots, build, f"the combination {text}", notices)


def _plan_clusters(model: LoadedModel, job: Job) -> Plan:
    spec: ClusterJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        main = obj.Unit(spec.layer, spec.kind, [s.unit for s in chunk])  # type: ignore[arg-type]  # a cluster's kind is one of Unit's
        vectors = [spec.centroids[s.facet] for s in chunk]
        return obj.steer(main, spec.cluster_layer, vectors, spec.weight, pooled=spec.pooled)

    return Plan(spec.slots(), build, f"{spec.kind}({spec.layer}) steered to dataset clusters", [])


def terms_objective(terms: Sequence[Term]) -> obj.Objective:
    """The weighted sum of unit objectives a combination stands for."""
    total: obj.Objective | None = None
    for t in terms:
        o = obj.Unit(t.layer, t.kind, t.unit, x=t.x, y=t.y) * float(t.weight)  # type: ignore[arg-type]  # a term's kind is one of Unit's
        total = o if total is None else total + o
    assert total is not None
    return total


def _plan_direction(model: LoadedModel, job: Job) -> Plan:
    spec: DirectionJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    n = model.graph[spec.layer].channels
    if spec.seeds:
        vectors = [obj.random_direction(spec.layer, n, s).vector for s in spec.seeds]  # type: ignore[attr-defined]  # random_direction builds a Direction
    else:
        vectors = [torch.tensor(v, dtype=torch.float32) for v in spec.vectors]
    slots, div_layer, notices = _diverse(model, spec, spec.layer, spec.slots())

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        rows = torch.stack([vectors[s.seed_keys[0]] for s in chunk])
        return _signed_diverse(obj.Direction(spec.layer, rows), spec, div_layer, chunk)

    return Plan(slots, build, f"directions in {spec.layer}", notices)


def alignment_layer(model: LoadedModel, layers: Sequence[str]) -> str | None:
    """Where interpolation frames are aligned: a feature map about half way to the first target
    (the article: "lower layer activations"; Lucid aligns mixed4a frames on mixed3b)."""
    first = min(model.graph[n].index for n in layers)
    feats = [x for x in model.graph if x.kind == "feature" and x.index < first]
    return feats[len(feats) // 2].name if feats else None


def _plan_interpolation(model: LoadedModel, job: Job) -> Plan:
    spec: InterpolationJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    a, b = terms_objective(spec.a), terms_objective(spec.b)
    align = spec.alignment_layer or alignment_layer(model, [t.layer for t in spec.a + spec.b])
    settings = job.settings
    if spec.shared and not settings.shared:
        settings = replace(settings, shared=[list(p) for p in INTERPOLATION_SHARED])
    notices = []
    if model.input.max_batch is not None and model.input.max_batch < spec.frames:
        settings = replace(settings, shared=[])
        notices.append(
            f"This model only accepts batch {model.input.max_batch}: the frames are rendered "
            "one at a time, without the shared parameterization or alignment."
        )
        align = None
    slots = spec.slots() if align is not None or settings.shared else [
        replace(s, group=s.index) for s in spec.slots()
    ]  # fmt: skip

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        main = obj.Interpolate(a, b, spec.frames, start=chunk[0].index)
        if align is None or spec.alignment_weight <= 0 or len(chunk) < 2:
            return main
        coupling = obj.alignment(align, relative=True)
        return obj.WithCoupling(main, coupling, spec.alignment_weight)

    return Plan(slots, build, f"the interpolation {spec.title}", notices, settings)


PLANS[UnitJob] = _plan_units
PLANS[CombinationJob] = _plan_combination
PLANS[ClusterJob] = _plan_clusters
register_runner(ExamplesJob, run_examples)
PLANS[DirectionJob] = _plan_direction
PLANS[InterpolationJob] = _plan_interpolation


# ------------------------------------------------------------------------------------------------
# The article's figures: settings sweeps with runners of their own
# ------------------------------------------------------------------------------------------------
def _chosen(spec: JobSpec, only: Sequence[int] | None) -> list[Slot]:
    slots = spec.slots()
    if only is None:
        return slots
    wanted = {int(i) for i in only}
    missing = sorted(wanted - {s.index for s in slots})
    if missing:
        raise RenderError(f"The job has no image {missing}.")
    return [s for s in slots if s.index in wanted]


def _as_slot(
    sub: Generator[Event, None, JobResult], job: Job, slot: Slot, view: SlotView,
    device: str, out: list[UnitResult],
) -> Generator[Event, None, JobResult]:  # fmt: skip
    """Run a one-image sub-job as ``slot`` of ``job``: its events name that slot, its result is
    filed and named by the slot's ``view`` and carries ``job``'s provenance (appended to
    ``out``)."""
    where: dict[str, Any] = {"slots": (slot.index,), "offset": slot.index, "facets": (slot.facet,),
             "units": (slot.unit,)}  # fmt: skip
    try:
        while True:
            ev = next(sub)
            if isinstance(ev, (StepEvent, PreviewEvent)):
                ev = replace(ev, **where)
            elif isinstance(ev, NoticeEvent):
                ev = NoticeEvent(f"{view.caption}: {ev.message}")
            elif isinstance(ev, UnitDoneEvent):
                r = replace(ev.result, **_filed(view),
                            provenance=job.provenance(slot, [slot.index], device=device))  # fmt: skip
                out.append(r)
                ev = UnitDoneEvent(r)
            yield ev
    except StopIteration as stop:
        return stop.value


def _figure_start(
    model: LoadedModel, job: Job, device: torch.device | str | None
) -> tuple[float, torch.device]:
    """The start time and device of a figure's run, after checking its settings and spec."""
    job.settings.validate()
    job.spec.validate(model.graph)
    return time.perf_counter(), resolve_device(device, job.settings)


def _run_spectrum(
    model: LoadedModel, job: Job, cancelled: Callable[[], bool],
    only: Sequence[int] | None, device: torch.device | str | None,
) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The regularization spectrum row: the objective once per variant of the settings."""
    t0, dev = _figure_start(model, job, device)
    spec: SpectrumJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    target = CombinationJob(spec.terms)
    views = {v.slot: v for v in job_views(job, model.graph)}
    text = describe_device(dev)
    results: list[UnitResult] = []
    cancelled_any = False
    for slot in _chosen(spec, only):
        v = variant(spec.variants[slot.index])
        sub = replace(job, spec=target, settings=variant_settings(job.settings, v.key))
        r = yield from _as_slot(_run_planned(model, sub, cancelled, None, dev), job, slot,
                                views[slot.index], text, results)  # fmt: skip
        cancelled_any = cancelled_any or r.cancelled
        if r.cancelled:
            break
    return JobResult(results, cancelled_any, time.perf_counter() - t0, text)


def _run_steepest(
    model: LoadedModel, job: Job, cancelled: Callable[[], bool],
    only: Sequence[int] | None, device: torch.device | str | None,
) -> Generator[Event, None, JobResult]:  # fmt: skip
    """The steepest-descent view: a first step, then a render, under each metric
    (``SteepestJob.metric``); a step's high-frequency share is a notice."""
    t0, dev = _figure_start(model, job, device)
    spec: SteepestJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    if model.device != dev:
        model.to(dev)
    base = job.settings
    objective = terms_objective(spec.terms)
    x0 = _start_image(model, base, dev)
    text = describe_device(dev)
    views = {v.slot: v for v in job_views(job, model.graph)}
    results: list[UnitResult] = []
    cancelled_any = False
    for slot in _chosen(spec, only):
        v, first = spec.metric(slot.index)
        view = views[slot.index]
        s = variant_settings(base, v.key)
        if first:
            delta, gain = first_step(model, objective, s, x0, dev, job.preprocessing)
            high = float(high_frequency_share(delta.permute(0, 2, 3, 1).cpu().numpy())[0])
            yield NoticeEvent(f"{view.caption}: {100 * high:.0f}% of it above 0.25 cycles/px.")
            # ``steps``: the view's budget (a first step is complete, not a cancelled render)
            ur = UnitResult(**_filed(view), value=gain, image=step_image(delta)[0], dead=False,
                            seed=base.seed, steps=base.steps,
                            provenance=job.provenance(slot, [slot.index], device=text))  # fmt: skip
            results.append(ur)
            yield UnitDoneEvent(ur)
            continue
        sub = replace(job, spec=CombinationJob(spec.terms), settings=s)
        run = _run_planned(model, sub, cancelled, None, dev, start=lambda _c: x0)
        r = yield from _as_slot(run, job, slot, view, text, results)
        cancelled_any = cancelled_any or r.cancelled
        if r.cancelled:
            break
    return JobResult(results, cancelled_any, time.perf_counter() - t0, text)


def _start_image(model: LoadedModel, settings: RenderSettings, dev: torch.device) -> torch.Tensor:
    """The steepest-descent view's one start image: the decorrelated Fourier start of the seed."""
    s = replace(settings, param="fourier", decorrelate=True, shared=[], octaves=1)
    h, w = canvas_size(model, settings)
    p = make_param(s, 1, int(h), int(w), channels=model.input.channels,
                   seeds=[image_seed(settings.seed, 0)], device=dev)  # fmt: skip
    with torch.no_grad():
        return p().detach()


register_runner(SpectrumJob, _run_spectrum)
register_runner(SteepestJob, _run_steepest)


def render_units(
    model: LoadedModel,
    job: UnitJob,
    settings: RenderSettings | None = None,
    cancel: CancelFlag = None,
    *,
    device: torch.device | str | None = None,
) -> Generator[Event, None, list[UnitResult]]:
    """Render the units of ``job`` with the model's current preprocessing and labels (a
    convenience over ``run_job`` for scripts and tests); returns the results in slot order."""
    out = yield from run_job(model, Job.for_model(model, job, settings), cancel, device=device)
    return out.results
