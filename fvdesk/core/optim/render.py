"""The render loop: a plain generator (no Qt) that the GUI, the CLI and the tests all drive.

``render()`` optimizes a batch of images for one objective and yields ``StepEvent`` every step,
``PreviewEvent`` every ``preview_every`` steps (and at the end) and ``NoticeEvent`` for things the
user should know (dead units revived, batch halved after out-of-memory); its return value
(``StopIteration.value``, or ``result = yield from render(...)``) is the ``RenderResult``.
``render_units()`` renders many units of one layer in batches, one unit per image.

Per step: images from the parameterization (``param.py``) -> robustness transforms on the
model's device (``transforms.py``) -> the model's preprocessing (``LoadedModel.prepare_input``,
probed once as a per-pixel affine map and fused into the transform's sampling, so it costs one
pass) -> the extractor cut after the last target layer, weights frozen -> per-image objective
values -> fused Adam (or ``steepest.SteepestAscent``) on ``-sum(values)`` plus the penalties,
gradient transforms, image filters and octaves of ``regularizers.py``; the parameterization comes
from ``parameterizations.make_param`` (Fourier, pixels, MACO or a learned prior).  Speed is measured against
the floor (forward to the target + backward to the input) by ``benchmarks/bench_render.py``.
The saved image is the last one or, with ``settings.average``, the mean of the images after the
last steps (``_TailAverage``); its objective is the value reported, previews show the live image.

Dead units (zero activation and gradient on the near-grey start): a probe before step 1 finds
them; those images get Lucid's redirected ReLU gradient for ``relu_override_steps`` steps, then a
stronger random restart if still dead, and images whose objective gradient is still exactly zero
at the end are reported in ``RenderResult.dead`` / ``UnitResult.dead`` instead of passing as a
result.  The remedy is per image: live images render exactly as they would alone.

Reproducibility: every image has its own seed derived from ``settings.seed`` (and, in
``render_units``, the unit and facet); all random draws come from per-image CPU generators, so a
seed reproduces a render exactly on the same device (exactly on CPU; GPU kernels such as
``grid_sample``'s backward are not bit-deterministic) and an image does not depend on the other
images of its batch.

The parts: ``phases.py`` (one batch's render, ``BatchRender``, phase by phase), ``batching.py``
(slots in batches, the out-of-memory policy), ``pipeline.py`` (canvas -> the graph's input),
``relu.py`` (the redirected ReLU gradient), ``failures.py`` (torch's failures classified); their
names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch

from fvdesk.core.device import pick_device
from fvdesk.core.errors import RenderError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.batching import (  # noqa: F401 - the engine's names, imported from here
    BatchDone,
    _chunks,
    _merge,
    _smallest_canvas,
    _too_small_error,
    render_batches,
)
from fvdesk.core.optim.drive import CancelFlag, cancel_fn
from fvdesk.core.optim.events import Event, RenderResult
from fvdesk.core.optim.failures import (  # noqa: F401
    _TOO_SMALL,
    _as_oom,
    _free,
    _is_oom,
    _is_too_small,
    _OutOfMemory,
)
from fvdesk.core.optim.phases import (  # noqa: F401
    RESTART_SD,
    BatchRender,
    _CoreOut,
    _render_core,
    _TailAverage,
    image_seed,
)
from fvdesk.core.optim.pipeline import (  # noqa: F401
    _affine_preprocessing,
    _InputPipeline,
    canvas_size,
)
from fvdesk.core.optim.relu import (  # noqa: F401
    _OVERRIDDEN,
    _RedirectedReLU,
    redirected_relu,
    redirected_relu6,
    relu_override,
)
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.slots import Slot


def resolve_device(device: torch.device | str | None, settings: RenderSettings) -> torch.device:
    dev = device if isinstance(device, torch.device) else pick_device(device or settings.device)
    if dev.type == "cuda" and dev.index is None:  # compare equal to the model's cuda:N
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def render(
    model: LoadedModel,
    objective: obj.Objective,
    settings: RenderSettings | None = None,
    *,
    batch: int | None = None,
    cancel: CancelFlag = None,
    device: torch.device | str | None = None,
    preprocessing: Preprocessing | None = None,
) -> Generator[Event, None, RenderResult]:
    """Optimize ``batch`` (default ``settings.batch``) images for ``objective``.

    A generator: drive it with ``for ev in gen`` / ``yield from``; the ``RenderResult`` is its
    return value.  ``cancel`` (a ``threading.Event`` or zero-argument callable) is checked every
    step; a cancelled render returns the images as they are.  ``device`` overrides
    ``settings.device``; the model is moved there.  NaN/Inf raises ``RenderError`` naming the
    step; out-of-memory halves the batch and retries (a ``NoticeEvent`` says so).  Jobs
    (``fvdesk.core.jobs.run.run_job``) are the way front ends render; this is the engine's API
    for arbitrary objectives.
    """
    settings = settings or RenderSettings()
    settings.validate()
    b = int(batch or settings.batch)
    if b < 1:
        raise RenderError(f"A render needs at least one image, got batch {b}.")
    for name in objective.layers:
        model.graph[name]  # unknown layer -> RenderError with suggestions
    dev = resolve_device(device, settings)
    one = objective.coupled or bool(settings.shared)
    slots = [Slot(i, -1, i, (i,), 0 if one else i) for i in range(b)]

    def what() -> str:
        return objective.describe() if objective.coupled else "the shared parameterization"

    def build(chunk: Sequence[Slot]) -> obj.Objective:
        start, stop = chunk[0].index, chunk[-1].index + 1
        return objective if (start, stop) == (0, b) else objective.subset(start, stop)

    outs: list[_CoreOut] = []
    for ev in render_batches(
        model, slots, build, settings,
        per=b, device=dev, cancelled=cancel_fn(cancel), pre=preprocessing, what=what,
    ):  # fmt: skip
        if isinstance(ev, BatchDone):
            outs.append(ev.out)
        else:
            yield ev
    return _merge(outs, dev)
