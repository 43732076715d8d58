"""One owner per caption: every image of every job kind is named by the core's view of its slot,
and that is what the runner reports and a gallery saves (the app's tiles show the same views,
tests/gui/test_gui_presentation.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fvdesk.core.jobs import job as J
from fvdesk.core.jobs.presentation import job_views, labeller, slot_view, slot_views
from fvdesk.core.optim.settings import RenderSettings

CONV1 = "/features/block1/conv/Conv"
BLOCK3 = "/features/block3/relu/Relu"
LOGITS = "/classifier/Gemm"


def every_kind() -> list[J.JobSpec]:
    """One spec of each kind the CLI and the app make (small: two images or so each)."""
    rng = np.random.default_rng(0)
    centroids = tuple(tuple(rng.normal(size=64).tolist()) for _ in range(2))
    return [
        J.UnitJob(CONV1, (2,), facets=2),
        J.UnitJob(LOGITS, (1, 5), kind="logit", negative=True),
        J.UnitJob(LOGITS, (3,), kind="prob"),
        J.UnitJob(BLOCK3, (4,), kind="neuron", x=1, y=2),
        J.UnitJob(BLOCK3, kind="deepdream"),
        J.CombinationJob((J.Term(BLOCK3, 1), J.Term(LOGITS, 2, "logit", -0.5)), negative=True),
        J.DirectionJob(BLOCK3, seeds=(3, 4)),
        J.InterpolationJob((J.Term(BLOCK3, 1),), (J.Term(LOGITS, 5, "logit"),), frames=2),
        J.SpectrumJob((J.Term(LOGITS, 4, "logit"),), variants=("none", "tv")),
        J.SteepestJob((J.Term(BLOCK3, 3),)),
        J.ClusterJob(BLOCK3, 2, centroids, BLOCK3),
    ]


def test_presentation_modules_are_torch_free() -> None:
    """The app builds its tiles from the views before (and without) loading the engine."""
    code = "import sys, fvdesk.core.jobs.presentation as p; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    assert out.stdout.strip() == "False"


def test_views_say_what_each_kind_is(demo_model) -> None:
    labels = demo_model.labels
    (unit, neg, _prob, _neuron, dream, combo, direction, frames, row, steep,
     clusters) = [slot_views(s, labeller(demo_model.graph, labels)) for s in every_kind()]  # fmt: skip
    assert [v.caption for v in unit] == [f"{CONV1}:2", f"{CONV1}:2 #1"]
    assert unit[0].label is None and not unit[0].strip and unit[0].kind == "channel"
    assert neg[0].caption == f"−{LOGITS}:1" and neg[0].label == labels[1] and neg[0].negative
    assert dream[0].caption == f"deepdream({BLOCK3})" and dream[0].unit == -1
    assert combo[0].caption == f"−({BLOCK3}:1 − 0.5·{LOGITS}:2)" and combo[0].label == labels[2]
    assert [v.caption for v in clusters] == [f"{BLOCK3}:2 (cluster 1/2)",
                                             f"{BLOCK3}:2 #1 (cluster 2/2)"]  # fmt: skip
    assert [v.caption for v in steep] == [f"{m} {what}" for what in ("step", "render")
                                          for m in ("L2 (pixels)", "L∞ (sign)", "Decorrelated Fourier")]  # fmt: skip
    assert [v.caption for v in row] == ["Unregularized", "Total variation"]
    assert all(v.strip for v in steep + row + frames + direction)  # two directions: a strip
    one = J.DirectionJob(BLOCK3, seeds=(1,))
    assert not slot_view(one, one.slots()[0]).strip


def test_every_saved_caption_is_the_view_of_its_slot(demo_model, tmp_path) -> None:
    """The CLI's path (``write_job``) for every kind: results and saved items carry the views."""
    from fvdesk.cli.writing import write_job
    from fvdesk.core.output.gallery import read_gallery

    settings = RenderSettings(steps=2, size=16, batch=8, device="cpu")
    for n, spec in enumerate(every_kind()):
        job = J.Job.for_model(demo_model, spec, settings)
        views = job_views(job, demo_model.graph)
        out = tmp_path / f"g{n}"
        results = write_job(demo_model, job, out, device=torch.device("cpu"), quiet=True)
        got = [(r.slot, r.layer, r.unit, r.kind, r.caption, r.label) for r in results]
        assert got == [(v.slot, v.layer, v.unit, v.kind, v.caption, v.label) for v in views], spec
        _, pairs = read_gallery(out, images=False)
        assert len(pairs) == len(views), spec
        for item, _ in pairs:
            v = views[item.provenance["slot"]]
            assert (item.caption, item.label, item.objective) == (v.caption, v.label, v.kind)
            assert (item.layer, item.unit, item.facet) == (v.layer, v.unit, v.facet)


@pytest.mark.parametrize("text, layer", [
    ("/features/block3/relu/Relu", "block3/relu"), ("/features/block1/conv/Conv_3", "block1/conv"),
    ("/layer1/layer1.0/relu_1/Relu:1", "layer1.0/relu_1:1"), ("conv1", "conv1"),
    ("inception_3a/1x1", "inception_3a/1x1"),
])  # fmt: skip
def test_the_short_layer_name_drops_the_op_type_the_onnx_registry_knows(text, layer) -> None:
    from fvdesk.core.model.graph import short_name

    assert short_name(text) == layer


def test_one_vocabulary_of_kinds(demo_model) -> None:
    from fvdesk.core.optim import kinds

    assert J.UNIT_KINDS is kinds.UNIT_KINDS and J.CLASS_KINDS is kinds.CLASS_KINDS
    assert J.UNIT_KINDS == ("channel", "neuron", "deepdream", "logit", "prob")
    assert J.CLASS_KINDS == ("logit", "prob") and J.EXAMPLE_KINDS == ("channel", "neuron")
    assert kinds.FIGURE_KINDS == ("channel", "logit", "prob")  # a neuron's figure is not its own
    assert set(kinds.COMPARABLE_KINDS) == {"channel", "neuron", "logit", "cluster"}
    reported = {v.kind for s in every_kind() for v in slot_views(s)}
    assert reported <= {k.name for k in kinds.KINDS}  # every kind a result reports is declared
    assert kinds.measure_of("neuron", J.UnitJob(BLOCK3, (1,), kind="neuron", x=2)) == (
        "neuron", 2, None)  # fmt: skip
    assert kinds.measure_of("prob") == ("channel", None, None)
    odd = kinds.kind_info("test-new-kind")
    assert not (odd.unit or odd.figures or odd.comparable)  # nothing offered by mistake
