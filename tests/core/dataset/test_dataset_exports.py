"""Dataset examples on models shaped like users' exports: a fixed batch of 1 (both torch
exporters), the activation budget, vision-transformer token layers, NHWC, 1 channel, float16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fvdesk.core.jobs import passes
from fvdesk.core.jobs.job import ExamplesJob, Job
from fvdesk.core.jobs.run import run_job
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim.drive import drive
from tests.images import pattern_folder
from tests.models import fixed_batch_onnx

pytestmark = pytest.mark.usefixtures("examples_cache")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return pattern_folder(tmp_path_factory.mktemp("patterns"), per_class=3, size=40)


def batches_seen(monkeypatch) -> list[int]:
    """The batch sizes the pass hands its engine."""
    seen: list[int] = []
    make = passes.make_engine

    def spy(*args, **kwargs):
        engine = make(*args, **kwargs)
        run = engine.run

        def counted(pixels):
            seen.append(len(pixels))
            return run(pixels)

        engine.run = counted
        return engine

    monkeypatch.setattr(passes, "make_engine", spy)
    return seen


def examples(model, root: Path, layers, **kw):
    from fvdesk.core.dataset.cache import clear_cache

    clear_cache()  # each call computes (the cache key does not include the engine)
    spec = ExamplesJob(str(root), tuple(layers), **kw)
    return drive(run_job(model, Job.for_model(model, spec), device="cpu"))


def ranking(result, layer: str) -> list[list[tuple[str, float]]]:
    le = result.layers[layer]
    return [[(e.rel, e.value) for e in le.unit(u, top=5).top] for u in range(le.units)]


def same_examples(a, b, layer: str) -> None:
    for ua, ub in zip(ranking(a, layer), ranking(b, layer), strict=True):
        assert [r for r, _ in ua] == [r for r, _ in ub]
        assert np.allclose([v for _, v in ua], [v for _, v in ub], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dynamo", [False, True], ids=["classic", "dynamo"])
def test_fixed_batch_export_runs_examples_on_both_engines(
    dynamo, images, model_cache, monkeypatch
) -> None:
    model = load_model(fixed_batch_onnx(model_cache, dynamo=dynamo), check_parity=False)
    feature = next(la.name for la in model.graph.layers if la.kind == "feature")
    logits = model.graph.layers[-1].name
    seen = batches_seen(monkeypatch)
    ort = examples(model, images, [feature, logits], engine="onnxruntime", batch=8)
    ort_batches, seen[:] = list(seen), []
    tor = examples(model, images, [feature, logits], engine="torch", batch=8)
    assert (ort.engine, tor.engine) == ("onnxruntime", "torch")
    assert ort.images == tor.images == 24
    for layer in (feature, logits):
        same_examples(ort, tor, layer)
    if not dynamo:  # the graph takes any batch once its batch dimension is symbolic
        assert ort_batches == [8, 8, 8]
    else:  # the dynamo export reshapes to a fixed [1, 16]: batch 1, the model's own limit
        assert max(ort_batches) == 1


def test_a_graph_that_bakes_its_batch_in_falls_back_to_its_declared_batch(
    images, model_cache
) -> None:
    """The dynamo export's reshape to [1, 16] computes garbage (or fails) at batch 2 once the
    input's batch is symbolic: the engine checks a batch of 2 against single images and keeps 1."""
    import dataclasses

    import torch

    from fvdesk.core.dataset.engine import Measure, OrtEngine

    model = load_model(fixed_batch_onnx(model_cache, dynamo=True), check_parity=False)
    model.input = dataclasses.replace(model.input, max_batch=None)  # as if the loader missed it
    layers = [model.graph.layers[-1].name]
    engine = OrtEngine(model, layers, Measure(), model.preprocessing, torch.device("cpu"))
    assert engine.max_batch == 1
    assert len(engine.run(np.zeros((1, 32, 32, 3), np.uint8))[layers[0]]) == 1


def test_the_activation_budget_shrinks_the_batch(images, demo_model_path, monkeypatch) -> None:
    model = load_model(demo_model_path, check_parity=False)
    layer = "/features/block2/relu/Relu"
    per_image = 4 * int(np.prod(model.graph[layer].shape[1:]))
    monkeypatch.setattr(passes, "OUTPUT_BUDGET", 5 * per_image)
    seen = batches_seen(monkeypatch)
    for engine in ("onnxruntime", "torch"):
        seen[:] = []
        result = examples(model, images, [layer], engine=engine, batch=16)
        assert result.images == 24 and seen == [5, 5, 5, 5, 4]


def test_vit_token_layers_and_the_class_token_on_both_engines(images, model_cache) -> None:
    """onnxruntime hands out the raw (N, T, D) sequence: it becomes the patch map (N, D, 4, 4), and
    ``name#0`` the class token, as on the torch side (it crashed: "could not broadcast")."""
    from tests.models import cached_export, tiny_vit

    model = load_model(
        cached_export(model_cache, "tiny_vit", tiny_vit, size=32), check_parity=False
    )
    block = "/encoder/layers/encoder_layer_0/Add_1"
    assert model.graph[block].kind == "tokens"
    layers = [block, block + "#0"]
    ort = examples(model, images, layers, engine="onnxruntime", batch=8)
    tor = examples(model, images, layers, engine="torch", batch=8)
    for layer in layers:
        assert ort.layers[layer].units == 24
        same_examples(ort, tor, layer)


@pytest.mark.parametrize("kind", ["nhwc", "gray", "float16"])
def test_other_export_shapes_give_the_same_examples_on_both_engines(
    kind, images, model_cache
) -> None:
    from tests.models import small_onnx, to_float16

    if kind == "float16":
        path = to_float16(small_onnx(model_cache, "rgb"), model_cache / "small_rgb_f16.onnx")
    else:
        path = small_onnx(model_cache, kind)
    model = load_model(path, check_parity=False)
    feature = next(la.name for la in model.graph.layers if la.kind == "feature")
    layers = [feature, model.graph.layers[-1].name]
    ort = examples(model, images, layers, engine="onnxruntime", batch=8)
    tor = examples(model, images, layers, engine="torch", batch=8)
    for layer in layers:
        same_examples(ort, tor, layer)
