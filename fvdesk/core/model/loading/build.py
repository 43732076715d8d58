"""One build attempt (canonicalize, find the image input, cut what cannot convert, convert, probe)
and the fallback: when the canonical graph fails to convert or run (or converts only in part)
where the file without repairs converts completely, the build is retried with each applied repair
left out in turn, and the one to blame is reported."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx

from fvdesk.core.errors import FvdeskError, ModelLoadError, UnsupportedModelError
from fvdesk.core.model import canonicalize as canon
from fvdesk.core.model import cut as cutlib
from fvdesk.core.model import vet
from fvdesk.core.model.loaded import ConversionCut
from fvdesk.core.model.loading.context import LoadContext, cause
from fvdesk.core.model.loading.convert import NodeFailed, convert, nothing_convertible
from fvdesk.core.model.loading.inputs import (
    declared_dtype,
    extra_inputs,
    find_image_input,
    input_shape,
    size_hint,
)
from fvdesk.core.model.loading.probe import ProbeError, probe

#: Conversion-time failures handled by cutting the graph there, at most this many per build.
MAX_CUTS = 8


def all_steps() -> tuple[str, ...]:
    """Every skippable step: the canonicalization passes and the loader's shape measurement."""
    return (*canon.PASS_NAMES, canon.MEASURE_SHAPES)


@dataclass(frozen=True)
class Request:
    """What every build attempt starts from: the named, sorted graph and the user's choices."""

    base: Any  # onnx.ModelProto (never modified)
    chosen: str | None
    explicit: bool
    metadata: dict[str, str]
    input_size: tuple[int, int] | None = None  # the user's (argument or sidecar)


@dataclass
class Built:
    """One build attempt's result: the graph the module was converted from, and what was seen."""

    model: Any
    report: canon.Report
    index: int
    spec: dict
    extra: dict[str, torch.Tensor]
    module: fx.GraphModule
    probe: dict[str, Any]  # fx node -> shape info at the probe batch (2 when it worked)
    probe1: dict[str, Any] | None  # at batch 1, when ``probe`` is at batch 2
    max_batch: int | None
    batch_first: list[bool]  # per module output: its dim 0 is the batch
    cut: ConversionCut | None
    removed: list[Any]  # NodeProtos left out by a cut
    full_shapes: dict  # inferred shapes of the whole canonical graph (for left-out layers)
    blockers: list[cutlib.Blocker]
    warnings: list[str]
    path: str
    skipped: list[str] = field(default_factory=list)

    def nothing_left(self) -> FvdeskError:
        return nothing_convertible(self.path, self.blockers)


class BuildFailure(Exception):
    """A build attempt could not convert or run the graph (``public`` is what the user sees)."""

    def __init__(self, error: Exception, applied: list[str], path: str) -> None:
        super().__init__(str(error))
        self.applied = list(applied)
        if isinstance(error, FvdeskError):
            self.public: FvdeskError = error
            self.cause = str(error)
        elif isinstance(error, ProbeError):
            advice = ""
            if error.size_agnostic:
                advice = (
                    "; if the model takes another input size, save it with `fvdesk info "
                    f"{Path(path).name} --input-size HxW --remember`"
                    if error.size_source != "user"
                    else "; check the input size you gave"
                )
            self.public = ModelLoadError(
                f"{path} converts to torch but the result {error}{advice}."
            )
            self.cause = f"the converted module {error}"
        else:
            self.public = UnsupportedModelError(f"{path} cannot be converted to torch: {error}.")
            self.cause = str(error)


def _keep(built: Built | None, failure: BuildFailure | None) -> Built:
    if built is not None:
        return built
    assert failure is not None
    raise failure.public


def build_with_fallback(ctx: LoadContext, req: Request) -> Built:
    """Canonicalize and convert; when the canonical graph fails (or converts only in part)
    where the file as it is converts completely, find the step to blame and leave it out."""
    failure: BuildFailure | None = None
    built: Built | None = None
    try:
        built = build(ctx, req, skip=())
    except BuildFailure as e:
        failure = e
    if built is not None and built.cut is None:
        return built
    suspects = built.report.applied if built is not None else failure.applied  # type: ignore[union-attr]  # built or failure is set, never neither
    if not suspects:
        return _keep(built, failure)
    ctx.report(0.55, "Retrying without graph repair")
    try:
        plain = build(ctx, req, skip=all_steps())
    except Exception:  # noqa: BLE001 - the file as it is does no better: keep the first answer
        return _keep(built, failure)
    if plain.cut is not None:
        return _keep(built, failure)
    why = failure.cause if failure is not None else built.cut.reason  # type: ignore[union-attr]  # built or failure is set, never neither
    for name in suspects:
        ctx.report(0.6, f"Retrying without the step '{name}'")
        try:
            candidate = build(ctx, req, skip=(name,))
        except Exception:  # noqa: BLE001 - this step is not the culprit (or not alone)
            continue
        if candidate.cut is None:
            candidate.skipped = [name]
            candidate.report.add(f"left out the step '{name}', which made the graph unconvertible")
            candidate.warnings.append(
                f"{ctx.path.name}: the graph repair step '{name}' made the model unconvertible "
                f"({why}); fvdesk left that step out."
            )
            return candidate
    plain.skipped = list(all_steps())
    plain.warnings.append(
        f"{ctx.path.name}: graph repair made the model unconvertible ({why}) and no single "
        "step could be blamed; fvdesk converted the file without repairs."
    )
    return plain


def build(ctx: LoadContext, req: Request, *, skip: Iterable[str]) -> Built:
    skip = frozenset(skip)
    saved, ctx.warnings = ctx.warnings, []
    report = canon.Report()
    try:
        return _build_inner(ctx, req, skip, report)
    except (UnsupportedModelError, ProbeError, NodeFailed) as e:
        raise BuildFailure(e, report.applied, str(ctx.path)) from e
    finally:
        ctx.warnings = saved


def _build_inner(
    ctx: LoadContext, req: Request, skip: frozenset[str], report: canon.Report
) -> Built:
    model, index, spec = _repair(ctx, req, skip, report)
    image = model.graph.input[index].name
    ctx.phase = "checking the operators"
    ctx.report(0.4, "Checking operators")
    full_shapes = canon.known_shapes(model)
    found = cutlib.blockers(model)
    ctx.mark("check")
    attempt = _convert_with_cuts(ctx, model, image, found, spec, skip, report)
    work, graph_cut, index, extra, module, bad = attempt
    ctx.mark("convert")
    ctx.phase = "probing the converted model"
    ctx.report(0.6, "Probing the converted model")
    probed, probe1, max_batch, first = probe(module, index, spec, extra)
    ctx.mark("probe")
    return Built(
        model=work,
        report=report,
        index=index,
        spec=spec,
        extra=extra,
        module=module,
        probe=probed,
        probe1=probe1,
        max_batch=max_batch,
        batch_first=first,
        cut=_cut_info(model, graph_cut, bad),
        removed=list(graph_cut.removed) if graph_cut is not None else [],
        full_shapes=full_shapes,
        blockers=bad,
        warnings=ctx.warnings,
        path=str(ctx.path),
    )


def _repair(
    ctx: LoadContext, req: Request, skip: frozenset[str], report: canon.Report
) -> tuple[Any, int, dict]:
    """The canonical copy of the graph, its image input (index and spec, sized) and the unused
    inputs pruned; activation sizes vetted at that size."""
    model = onnx.ModelProto()
    model.CopyFrom(req.base)
    ctx.phase = "repairing the graph"
    model = canon.canonicalize(model, where=str(ctx.path), report=report, skip=skip)
    ctx.mark("canonicalize")

    ctx.phase = "finding the image input"
    index, spec = find_image_input(ctx, model, req.chosen, explicit=req.explicit)
    image = model.graph.input[index].name
    spec["dtype"] = declared_dtype(req.base, image, spec["dtype"])
    canon.prune_unused(model, report, protect=[image])
    hint = size_hint(ctx, req.metadata, spec, req.input_size)
    if hint:
        spec["height"], spec["width"] = hint
    vet.check_activation_sizes(canon.without_weights(model)[0], spec, str(ctx.path))
    return model, [i.name for i in model.graph.input].index(image), spec


def _convert_with_cuts(
    ctx: LoadContext,
    model: Any,
    image: str,
    found: list[cutlib.Blocker],
    spec: dict,
    skip: frozenset[str],
    report: canon.Report,
) -> tuple[Any, cutlib.CutGraph | None, int, dict[str, torch.Tensor], fx.GraphModule, list]:
    """Convert, cutting the graph before the nodes that block conversion (``found``) and before
    each node whose converter raises, up to ``MAX_CUTS`` times.  Returns the graph converted,
    the cut (or None), the image input's index there, the other inputs' zeros, the module and
    the blockers."""
    failed: list[cutlib.Blocker] = []
    for _attempt in range(MAX_CUTS):
        bad = found + failed
        work, graph_cut = model, None
        if bad:
            graph_cut = cutlib.cut(model, [b.node for b in bad], protect=[image])
            if graph_cut is None:
                raise nothing_convertible(str(ctx.path), bad)
            work = graph_cut.model
        index = [i.name for i in work.graph.input].index(image)
        extra = extra_inputs(ctx, work, index)
        if canon.MEASURE_SHAPES not in skip:
            try:
                measure_shapes(work, index, spec, extra, report)
            except Exception as e:  # noqa: BLE001 - the converter may not need them after all
                report.warnings.append(f"onnxruntime could not measure shapes ({cause(e)})")
        ctx.phase = "converting to torch"
        ctx.report(0.5, "Converting to torch")
        try:
            module = convert(ctx, work, own_inference="infer shapes" in skip)
        except NodeFailed as e:
            if any(b.node == e.blocker.node for b in bad):
                raise
            failed.append(e.blocker)
            continue
        return work, graph_cut, index, extra, module, bad
    raise nothing_convertible(str(ctx.path), found + failed)


def _cut_info(
    model: Any, graph_cut: cutlib.CutGraph | None, bad: list[cutlib.Blocker]
) -> ConversionCut | None:
    """What a partial conversion left out, for ``LoadedModel.conversion``."""
    if graph_cut is None:
        return None
    ordered = [b for b in bad if b.node in {n.name for n in graph_cut.removed}]
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    ordered.sort(key=lambda b: order.get(b.node, 0))
    head = ordered[0] if ordered else bad[0]
    return ConversionCut(
        stopped_at=head.node,
        op=head.op,
        reason=head.reason,
        cut_nodes=len(graph_cut.removed),
        total_nodes=len(model.graph.node),
        cut_ops=cutlib.op_counts(graph_cut.removed),
        boundary=tuple(graph_cut.boundary),
        blockers=tuple(b.node for b in ordered),
    )


def measure_shapes(model: Any, index: int, spec: dict, extra: dict, report: canon.Report) -> None:
    """Shapes onnx2torch reads but inference left unknown, measured by one onnxruntime run.

    Looked up through ``canonicalize`` (``canon.tensors_needing_shapes``), which tests replace."""
    missing = canon.tensors_needing_shapes(model)
    if not missing:
        return
    image = np.zeros(input_shape(spec, 1), np.float32)
    feeds = {
        vi.name: image if i == index else extra[f"input_{i + 1}"].numpy()
        for i, vi in enumerate(model.graph.input)
    }
    canon.fill_shapes_with_ort(model, feeds, missing, report)
    report.applied.append(canon.MEASURE_SHAPES)
