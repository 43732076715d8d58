"""The job model: specs, slots, objective expressions, provenance, the runner and the drive loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.jobs.job import (
    CombinationJob,
    Job,
    JobSpec,
    Term,
    UnitJob,
    combination_caption,
    job_from_provenance,
    parse_objective,
)
from fvdesk.core.jobs.run import run_job
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim import options
from fvdesk.core.optim.drive import drive
from fvdesk.core.optim.events import NoticeEvent, PreviewEvent, StepEvent, UnitDoneEvent
from fvdesk.core.optim.settings import RenderSettings
from tests.models import small_onnx

FAST = RenderSettings(steps=5, size=24, batch=2, preview_every=2)
RELU = "/features/features.2/Relu"


@pytest.fixture(scope="module")
def small(model_cache: Path):
    return load_model(small_onnx(model_cache, "rgb"), check_parity=False)


def run(model, job, **kw):
    events = []
    result = drive(run_job(model, job, **kw), events.append)
    return events, result


# -- expressions ---------------------------------------------------------------------------------
def test_parse_objective_terms_weights_kinds_and_positions() -> None:
    terms = parse_objective(
        "conv-1/a:12 + 0.5*conv-1/a:40 - head:out:1:7 + 2e-1*L:3@4,5 - prob(fc:2)"
    )
    assert terms == (
        Term("conv-1/a", 12, "channel", 1.0),
        Term("conv-1/a", 40, "channel", 0.5),
        Term("head:out:1", 7, "channel", -1.0),
        Term("L", 3, "neuron", 0.2, 4, 5),
        Term("fc", 2, "prob", -1.0),
    )
    assert parse_objective("-L:1")[0].weight == -1.0
    assert parse_objective("fc:3", lambda layer: "logit")[0].kind == "logit"


@pytest.mark.parametrize(
    "text", ["", "L", "L:x", "0.5*", "L:1 +", "bogus(L:1)", "L:1@3", "1e999*L:1", "L:1 ++ L:2"]
)
def test_bad_expressions_are_one_sentence(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_objective(text)
    assert str(e.value).count("\n") == 0 and str(e.value).endswith(".")


def test_captions() -> None:
    terms = parse_objective("a:1 + 0.5*b:2 - c:3 - 2*d:4@1,2")
    assert combination_caption(terms) == "a:1 + 0.5·b:2 − c:3 − 2·d:4@1,2"
    assert combination_caption(parse_objective("-a:1 + b:2")) == "−a:1 + b:2"


# -- specs and slots ------------------------------------------------------------------------------
def test_unit_job_slots_keep_facets_of_a_unit_together() -> None:
    slots = UnitJob("L", (3, 9), facets=3).slots()
    assert [(s.unit, s.facet, s.group) for s in slots] == [
        (3, 0, 0), (3, 1, 0), (3, 2, 0), (9, 0, 1), (9, 1, 1), (9, 2, 1),
    ]  # fmt: skip
    assert [s.seed_keys for s in slots[:2]] == [(3, 0), (3, 1)]
    loose = UnitJob("L", (3, 9), facets=2, diversity_weight=0).slots()
    assert len({s.group for s in loose}) == 4  # no coupling without the diversity term


@pytest.mark.parametrize(
    "spec",
    [
        UnitJob("L", (1, 2), kind="neuron", negative=True, facets=2, x=3, y=4),
        UnitJob("L", (), kind="deepdream"),
        CombinationJob((Term("a", 1), Term("b", 2, "neuron", -0.5, 1, 1)), facets=3),
    ],
)
def test_specs_round_trip_through_json(spec: JobSpec) -> None:
    import json

    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and type(again) is type(spec)


def test_bad_specs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Unknown job type"):
        JobSpec.from_dict({"type": "telepathy"})
    with pytest.raises(ConfigError, match="at least one unit"):
        UnitJob("L", ())
    with pytest.raises(ConfigError, match="facet"):
        UnitJob("L", (1,), facets=0)
    with pytest.raises(ConfigError, match="kind"):
        UnitJob("L", (1,), kind="telepathy")
    with pytest.raises(ConfigError, match="at least one term"):
        CombinationJob(())


def test_specs_are_checked_against_the_graph(small) -> None:
    g = small.graph
    with pytest.raises(RenderError, match="did you mean"):
        UnitJob(RELU + "x", (0,)).validate(g)
    with pytest.raises(RenderError, match="has 8 channels"):
        UnitJob(RELU, (8,)).validate(g)
    with pytest.raises(RenderError, match="outside layer"):
        UnitJob(RELU, (0,), kind="neuron", x=999).validate(g)
    with pytest.raises(RenderError, match="vector layer"):
        UnitJob(RELU, (0,), kind="logit").validate(g)


# -- running -----------------------------------------------------------------------------------
def test_a_combination_job_maximizes_its_weighted_sum(small) -> None:
    spec = CombinationJob((Term(RELU, 1), Term(RELU, 4, weight=-0.5)), facets=2)
    events, result = run(small, Job.for_model(small, spec, FAST))
    assert [r.slot for r in result.results] == [0, 1] and not result.cancelled
    r = result.results[0]
    assert r.kind == "combination" and r.unit == -1 and r.caption == f"{RELU}:1 − 0.5·{RELU}:4"
    # the value is the objective on the final image: channel 1 minus half of channel 4
    import torch

    with torch.no_grad():
        acts = small.activations(torch.from_numpy(r.image).permute(2, 0, 1)[None] / 255.0, [RELU])
    m = acts[RELU][0].float().flatten(1).mean(1)
    assert r.value == pytest.approx(float(m[1] - 0.5 * m[4]), rel=2e-2, abs=2e-3)
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps and all(e.slots == (0, 1) for e in steps)


def test_every_result_carries_its_provenance(small) -> None:
    job = Job.for_model(small, UnitJob(RELU, (0, 1, 2)), FAST)
    _, result = run(small, job)
    p = result.results[2].provenance
    assert p["job"] == job.spec.to_dict() and p["slot"] == 2 and p["batch"] == [2]
    assert result.results[0].provenance["batch"] == [0, 1]
    assert p["model"]["sha256"] == small.sha256 and p["seed"] == FAST.seed
    assert p["settings"] == FAST.to_dict() and p["preprocessing"]["preset"] == "imagenet"
    rep = job_from_provenance(p)
    assert rep.job.spec == job.spec and rep.slot == 2 and rep.batch == (2,)
    assert rep.job.settings == job.settings and rep.job.provenance_key() == job.provenance_key()


@pytest.mark.parametrize("average", [0.0, 0.6])
def test_a_batch_renders_the_same_pixels_again_from_its_record(small, average: float) -> None:
    """Reproduction re-renders the exact batch an image was made in: bit-identical on CPU (also
    when the saved image is the mean of the last steps' images)."""
    spec = UnitJob(RELU, (0, 1, 2), facets=2)  # diversity couples each unit's facets
    s = RenderSettings(steps=5, size=24, batch=4, preview_every=0, average=average)
    job = Job.for_model(small, spec, s)
    _, first = run(small, job)
    assert first.results[0].provenance["settings"]["average"] == average
    for r in (first.results[1], first.results[4]):
        rep = job_from_provenance(r.provenance)
        _, again = run(small, rep.job, only=rep.batch)
        (same,) = [x for x in again.results if x.slot == rep.slot]
        assert np.array_equal(same.image, r.image) and same.value == r.value


def test_a_job_captures_its_preprocessing_and_labels(small) -> None:
    """The runner uses what the job captured, whatever the model says by the time it runs."""
    from dataclasses import replace

    from fvdesk.core.model.preprocessing import preset

    job = Job.for_model(small, UnitJob(RELU, (0,)), FAST)
    unit_job = replace(job, preprocessing=preset("unit"))
    _, a = run(small, job)
    _, b = run(small, unit_job)
    # the same start image seen through another preprocessing excites the unit differently
    assert abs(a.results[0].value - b.results[0].value) > 0.1 * abs(a.results[0].value)
    assert b.results[0].provenance["preprocessing"]["preset"] == "unit"
    assert small.preprocessing.preset == "imagenet"  # never touched
    logits = small.graph.logits_name
    labelled = replace(
        Job.for_model(small, UnitJob(logits, (3,), kind="logit"), FAST),
        labels=tuple(f"c{i}" for i in range(10)),
    )
    _, c = run(small, labelled)
    assert c.results[0].label == "c3" and small.labels is None


def test_a_job_for_another_model_is_refused(small) -> None:
    from fvdesk.core.jobs.job import ModelRef

    job = Job(UnitJob(RELU, (0,)), FAST, small.preprocessing, ModelRef("other.onnx", "f" * 64))
    with pytest.raises(RenderError, match="other.onnx"):
        run(small, job)


def test_only_renders_the_asked_slots_in_one_batch(small) -> None:
    job = Job.for_model(small, UnitJob(RELU, (0, 1, 2, 3)), FAST)
    events, result = run(small, job, only=[1, 3])
    assert [r.slot for r in result.results] == [1, 3]
    assert {e.slots for e in events if isinstance(e, PreviewEvent)} == {(1, 3)}
    with pytest.raises(RenderError, match="no image"):
        run(small, job, only=[9])


def test_facets_without_batching_lose_the_diversity_term_with_a_notice(model_cache: Path) -> None:
    m = load_model(small_onnx(model_cache, "view1"), check_parity=False)
    assert m.input.max_batch == 1
    spec = UnitJob(m.graph.logits_name, (1,), kind="logit", facets=2)
    events, result = run(m, Job.for_model(m, spec, FAST))
    assert any("diversity" in e.message for e in events if isinstance(e, NoticeEvent))
    assert len(result.results) == 2


# -- the drive loop ---------------------------------------------------------------------------------
def _fake_job():
    for step in range(1, 11):
        yield StepEvent(step, 10, 0.0, np.zeros(1))
    yield NoticeEvent("hello")
    return "done"


def test_drive_returns_the_result_and_throttles_steps_for_displays() -> None:
    seen: list = []
    t = iter(range(100))
    assert drive(_fake_job(), seen.append, step_hz=1.0, clock=lambda: float(next(t)) / 4) == "done"
    steps = [e.step for e in seen if isinstance(e, StepEvent)]
    assert steps[-1] == 10 and len(steps) < 10  # throttled, the last step always delivered
    assert isinstance(seen[-1], NoticeEvent)
    everything: list = []
    drive(_fake_job(), everything.append)
    assert len(everything) == 11


def test_drive_closes_the_job_when_the_handler_fails() -> None:
    closed = []

    def job():
        try:
            yield NoticeEvent("x")
            yield NoticeEvent("y")
        finally:
            closed.append(True)

    def boom(ev):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(job(), boom)
    assert closed == [True]


def test_unit_done_events_arrive_in_slot_order_per_batch(small) -> None:
    events, result = run(small, Job.for_model(small, UnitJob(RELU, (5, 6, 7)), FAST))
    done = [e.result.slot for e in events if isinstance(e, UnitDoneEvent)]
    assert done == [0, 1, 2] == [r.slot for r in result.results]


# -- options ------------------------------------------------------------------------------------------
def test_every_render_setting_is_an_option_or_explained() -> None:
    assert options.undocumented() == []


def test_options_parse_and_refuse_with_the_flag_named() -> None:
    assert options.option("steps").parse("12") == 12
    assert options.option("size").parse("native") is None
    assert options.option("scales").parse("1,0.9") == (1.0, 0.9)
    assert options.option("decorrelate").parse("off") is False
    for name, bad, words in [
        ("steps", "0", "at least 1"),
        ("lr", "0", "positive"),
        ("param", "wavelet", "one of"),
        ("tv", "-1", "negative"),
        ("batch", "x", "whole number"),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            options.option(name).parse(bad)
        assert options.option(name).flag in str(e.value)


def test_apply_sets_render_and_transform_options() -> None:
    s = options.apply(RenderSettings(), {"steps": 7, "jitter": 4, "angles": None})
    assert s.steps == 7 and s.transforms.jitter == 4 and s.transforms.angles is None
