"""One batch's render, phase by phase (``fvdesk.core.optim.phases.BatchRender``): each phase is
run alone on a small model and checked for the state it leaves and the events it yields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvdesk.core.errors import RenderError
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim import objectives as obj
from fvdesk.core.optim.events import NoticeEvent, PreviewEvent, StepEvent
from fvdesk.core.optim.failures import _OutOfMemory
from fvdesk.core.optim.phases import BatchRender, image_seed
from fvdesk.core.optim.render import render
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.slots import Slot
from tests.models import dead_unit_onnx, small_onnx

RELU = "/features/features.2/Relu"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small(model_cache):
    return load_model(small_onnx(model_cache, "rgb"))


def slots(n: int, first: int = 0) -> list[Slot]:
    return [Slot(first + i, i, 0, (i,), first + i) for i in range(n)]


def batch(model, objective, n=2, cancelled=lambda: False, **kw) -> BatchRender:
    s = RenderSettings(**{"steps": 6, "size": 32, "preview_every": 0, **kw})
    return BatchRender(model, objective, s, slots(n), CPU, cancelled)


def test_init_names_the_slots_and_seeds_each_image(small) -> None:
    r = BatchRender(small, obj.channel(RELU, [0, 1]), RenderSettings(seed=3), slots(2, 5), CPU,
                    lambda: False)  # fmt: skip
    assert r.where == {"units": (0, 1), "offset": 5, "facets": (0, 0), "slots": (5, 6)}
    assert r.seeds == [image_seed(3, 0), image_seed(3, 1)] and r.seeds[0] != r.seeds[1]
    assert r.who([1, 0, 1]) == "unit 1, unit 0"
    with pytest.raises(RenderError, match="reads no layer"):
        BatchRender(small, obj.Zero(), RenderSettings(), slots(1), CPU, lambda: False)


def test_freeze_and_restore_the_weights_gradients(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]))
    weights = list(r.ext.parameters())
    before = [p.requires_grad for p in weights]
    r.freeze()
    assert weights and not any(p.requires_grad for p in weights)
    r.restore()
    assert [p.requires_grad for p in weights] == before


def test_begin_builds_the_first_octave_and_the_schedule(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]), steps=10, size=48, octaves=2, lr_anneal=0.5)
    r.begin()
    assert len(r.octaves) == 2 and r.octaves[0][0] == 1
    assert (r.param.height, r.param.width) == r.octaves[0][1] != (48, 48)
    assert r.anneal == 5 and r.end == 10 and r.main is not None
    values, main, zero = r.probe(True)
    assert values.shape == (2,) and main.shape == (2,) and zero == [False, False]


def test_probe_dead_start_redirects_the_dead_units(model_cache) -> None:
    dead = load_model(dead_unit_onnx(model_cache))  # units 1 and 2 are dead on a grey start
    r = batch(dead, obj.channel("relu", [0, 1, 2]), n=3, decay=1.0, size=24)
    r.freeze()
    r.begin()
    notices = [e.message for e in r.probe_dead_start()]
    r.restore()
    assert r.dead_start == [1, 2] and r.override_until == 32 and r.ext_o is not None
    assert r.redirect.tolist() == [False, True, True]
    assert len(notices) == 1 and "unit 1, unit 2: zero gradient" in notices[0]


def test_a_mid_run_death_gets_one_window_and_each_image_one_restart(model_cache) -> None:
    dead = load_model(dead_unit_onnx(model_cache))  # units 1 and 2 are dead on a grey start
    r = batch(dead, obj.channel("relu", [0, 1, 2]), n=3, decay=1.0, size=24, steps=100)
    r.begin()
    list(r.probe_dead_start())
    assert r.watched == [1, 2] and r.fresh_start == set()
    notices = [e.message for e in r.watch(5, np.array([0.0, 0.3, 0.0]))]
    assert notices == ["unit 0: zero objective at step 5; redirecting gradients for 32 steps."]
    assert r.watched == [1, 2, 0] and r.redirect.all() and r.override_until == 37
    assert not list(r.watch(6, np.array([0.0, 0.3, 0.0])))  # once per image
    step = r.override_until + 1
    notices = [e.message for e in r.before_step(step)]  # the window's verdict
    assert notices[0] == "unit 0: revived by the ReLU gradient override."
    assert "unit 1, unit 2: still no gradient; restarting" in notices[1]
    assert r.redirect.tolist() == [False, True, True] and r.fresh_start == {1, 2}
    assert r.override_until == step - 1 + 32 and r.watched == [1, 2]
    notices = [e.message for e in r.before_step(r.override_until + 1)]
    assert not any("restarting" in n for n in notices)  # no second restart
    assert r.watched == [] and not r.redirect.any()


def test_one_step_moves_the_image_and_reports_loss_and_values(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]))
    r.begin()
    x0 = r.param().detach().clone()
    stats = r.step(1)
    assert stats.shape == (3,) and r.steps_done == 1
    assert torch.isclose(stats[0], -stats[1:].sum())  # no penalties: loss = -sum(values)
    assert not torch.equal(r.param().detach(), x0)


def test_out_of_memory_in_a_step_names_the_batch_and_step(small, monkeypatch) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]))
    r.begin()

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(r, "forward", oom)
    with pytest.raises(_OutOfMemory) as e:
        r.step(4)
    assert (e.value.batch, e.value.step) == (2, 4)


def test_report_yields_the_step_and_a_due_preview(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]), preview_every=2)
    r.begin()
    evs = list(r.report(2, torch.tensor([-0.5, 0.2, 0.3])))
    assert [type(e) for e in evs] == [StepEvent, PreviewEvent]
    assert evs[0].loss == -0.5 and evs[0].values.tolist() == pytest.approx([0.2, 0.3])
    assert evs[1].images.shape == (2, 32, 32, 3) and evs[1].slots == (0, 1)
    assert [type(e) for e in r.report(3, torch.tensor([-0.5, 0.2, 0.3]))] == [StepEvent]
    with pytest.raises(RenderError, match="diverged at step 5"):
        list(r.report(5, torch.tensor([float("nan"), 0.2, 0.3])))


def test_watch_moves_the_end_once_converged(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]), steps=30, early_stop=5.0, early_stop_window=2)
    r.begin()
    evs = [e for step in (1, 2, 3, 4) for e in r.watch(step, np.array([1.0, 1.0]))]
    assert r.end == 4 + r.anneal < 30
    assert len(evs) == 1 and isinstance(evs[0], NoticeEvent) and "Converged" in evs[0].message


def test_before_step_anneals_and_changes_octave(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]), steps=10, size=48, octaves=2, lr=0.1)
    r.begin()
    first = (r.param.height, r.param.width)
    second_at, second = r.octaves[1]
    list(r.before_step(second_at - 1))
    assert (r.param.height, r.param.width) == first
    list(r.before_step(second_at))
    assert (r.param.height, r.param.width) == second != first
    r2 = batch(small, obj.channel(RELU, [0, 1]), steps=10, lr=0.1, lr_anneal=0.5)
    r2.begin()
    list(r2.before_step(10))
    assert r2.opt.param_groups[0]["lr"] < 0.1


def test_finish_returns_the_result_and_the_final_preview(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]))
    r.begin()
    r.step(1)
    gen = r.finish()
    evs = []
    while True:
        try:
            evs.append(next(gen))
        except StopIteration as stop:
            out = stop.value
            break
    assert [type(e) for e in evs] == [PreviewEvent] and evs[0].step == 1
    res = out.result
    assert res.images.shape == (2, 32, 32, 3) and res.steps_done == 1 and not res.cancelled
    assert res.values.shape == (2,) and out.main_values.shape == (2,) and out.slots == (0, 1)
    assert np.array_equal(res.images, evs[0].images)


def test_run_is_the_whole_render(small) -> None:
    s = RenderSettings(steps=5, size=32, batch=2, preview_every=0)
    gen = render(small, obj.channel(RELU, [0, 1]), s)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            want = stop.value
            break
    one = [Slot(i, -1, i, (i,), i) for i in range(2)]
    gen = BatchRender(small, obj.channel(RELU, [0, 1]), s, one, CPU, lambda: False).run()
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            got = stop.value.result
            break
    assert np.array_equal(got.images, want.images) and np.array_equal(got.values, want.values)


def test_a_cancelled_run_stops_before_the_first_step(small) -> None:
    r = batch(small, obj.channel(RELU, [0, 1]), cancelled=lambda: True)
    evs = list(r.run())
    assert r.was_cancelled and r.steps_done == 0
    assert not any(isinstance(e, StepEvent) for e in evs)
