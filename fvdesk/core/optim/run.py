"""Running jobs: ``run_job`` turns any ``Job`` into engine batches, results and provenance.

Each spec type has a *plan*: how its slots become objectives batch by batch (``PLANS``).  Spec
types with an execution of their own (no plain objective: dataset passes, settings sweeps)
register a runner with ``register_runner``; every runner yields the same events and returns a
``JobResult``, so the app, the CLI and the atlas drive them all alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

import torch

from fvdesk.core.device import describe_device
from fvdesk.core.errors import RenderError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.drive import CancelFlag, cancel_fn
from fvdesk.core.optim.events import Event, JobResult, NoticeEvent, UnitDoneEvent, UnitResult
from fvdesk.core.optim.jobs import (
    CombinationJob,
    Job,
    JobSpec,
    Slot,
    UnitJob,
    combination_caption,
    unit_caption,
)
from fvdesk.core.optim.render import BatchDone, render_batches, resolve_device
from fvdesk.core.optim.settings import RenderSettings

Runner = Callable[..., Generator[Event, None, JobResult]]


@dataclass
class Plan:
    """How a spec renders: its slots, the objective of a batch of them, and how to name things."""

    slots: list[Slot]
    build: Callable[[Sequence[Slot]], obj.Objective]
    layer: str  # the layer results are filed under
    kind: str  # the objective kind results report
    negative: bool
    what: str  # names the objective in messages
    label: Callable[[Slot], str | None]
    caption: Callable[[Slot, str | None], str]
    notices: list[str]


PLANS: dict[type[JobSpec], Callable[[LoadedModel, Job], Plan]] = {}
RUNNERS: dict[type[JobSpec], Runner] = {}


def register_runner(spec_type: type[JobSpec], runner: Runner) -> None:
    """Let ``run_job`` run ``spec_type`` with ``runner(model, job, cancelled, only, device)``."""
    RUNNERS[spec_type] = runner


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
    runner = RUNNERS.get(type(job.spec), _run_planned)
    return (yield from runner(model, job, cancel_fn(cancel), only, device))


def _run_planned(
    model: LoadedModel,
    job: Job,
    cancelled: Callable[[], bool],
    only: Sequence[int] | None,
    device: torch.device | str | None,
) -> Generator[Event, None, JobResult]:
    t0 = time.perf_counter()
    settings = job.settings
    settings.validate()
    job.spec.validate(model.graph)
    dev = resolve_device(device, settings)
    plan = PLANS[type(job.spec)](model, job)
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
    results: list[UnitResult] = []
    cancelled_any = False
    text = describe_device(dev)
    for ev in render_batches(
        model, slots, plan.build, settings, per=per, device=dev, cancelled=cancelled,
        pre=job.preprocessing, what=lambda: plan.what,
    ):  # fmt: skip
        if not isinstance(ev, BatchDone):
            yield ev
            continue
        out = ev.out
        r = out.result
        values = out.main_values if out.main_values is not None else r.values
        share = r.seconds / max(1, len(out.slots))
        for k, sid in enumerate(out.slots):
            slot = by_id[sid]
            value = float(values[k])
            label = plan.label(slot)
            ur = UnitResult(
                layer=plan.layer,
                unit=slot.unit,
                facet=slot.facet,
                label=label,
                kind=plan.kind,
                negative=plan.negative,
                value=-value if plan.negative and plan.kind != "combination" else value,
                image=r.images[k],
                dead=sid in r.dead,
                seed=settings.seed,
                steps=r.steps_done,
                slot=sid,
                cancelled=r.cancelled,
                caption=plan.caption(slot, label),
                seconds=share,
                provenance=job.provenance(slot, out.slots, device=text),
            )
            results.append(ur)
            yield UnitDoneEvent(ur)
        cancelled_any = cancelled_any or r.cancelled
    return JobResult(results, cancelled_any, time.perf_counter() - t0, text)


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
    model: LoadedModel, spec: UnitJob | CombinationJob, layer: str, slots: list[Slot]
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


def _plan_units(model: LoadedModel, job: Job) -> Plan:
    spec: UnitJob = job.spec  # type: ignore[assignment]
    slots, div_layer, notices = _diverse(model, spec, spec.layer, spec.slots())

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        if spec.kind == "deepdream":
            main: obj.Objective = obj.deepdream(spec.layer)
        else:
            units = [s.unit for s in chunk]
            main = obj.Unit(spec.layer, spec.kind, units, x=spec.x, y=spec.y)  # type: ignore[arg-type]
        if spec.negative:
            main = -main
        if div_layer is None:
            return main
        return obj.with_diversity(main, div_layer, spec.diversity_weight, _groups(chunk))

    def label(slot: Slot) -> str | None:
        return job.label(model.graph, spec.layer, slot.unit)

    def caption(slot: Slot, lab: str | None) -> str:
        return unit_caption(spec.layer, slot.unit, label=lab, facet=slot.facet,
                            negative=spec.negative, kind=spec.kind)  # fmt: skip

    what = f"{spec.kind}({spec.layer}) with diversity"
    return Plan(slots, build, spec.layer, spec.kind, spec.negative, what, label, caption, notices)


def _plan_combination(model: LoadedModel, job: Job) -> Plan:
    spec: CombinationJob = job.spec  # type: ignore[assignment]
    first = spec.terms[0].layer
    slots, div_layer, notices = _diverse(model, spec, first, spec.slots())
    text = combination_caption(spec.terms)

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        total: obj.Objective | None = None
        for t in spec.terms:
            o = obj.Unit(t.layer, t.kind, t.unit, x=t.x, y=t.y) * float(t.weight)  # type: ignore[arg-type]
            total = o if total is None else total + o
        assert total is not None
        if spec.negative:
            total = -total
        if div_layer is None:
            return total
        return obj.with_diversity(total, div_layer, spec.diversity_weight, _groups(chunk))

    def caption(slot: Slot, _label: str | None) -> str:
        name = f"({text})" if spec.negative and len(spec.terms) > 1 else text
        return unit_caption(name, -1, facet=slot.facet, negative=spec.negative)

    return Plan(slots, build, first, "combination", spec.negative, f"the combination {text}",
                lambda _s: text, caption, notices)  # fmt: skip


PLANS[UnitJob] = _plan_units
PLANS[CombinationJob] = _plan_combination


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
