"""On a CUDA GPU: the demo model computes what it computes on the CPU, and a render on the GPU
raises its objective (marked ``gpu`` by tests/conftest.py; skipped, saying why, without CUDA)."""

from __future__ import annotations

import io

import torch

from fvdesk.selftest import SelfTest


def test_the_demo_model_computes_the_same_on_the_gpu(demo_model_path) -> None:
    from fvdesk.core.model.loader import load_model

    model = load_model(demo_model_path, device="cpu")
    layer = model.graph.layers[len(model.graph.layers) // 2].name
    x01 = torch.rand(2, model.input.channels, model.input.height, model.input.width,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    on_cpu = model.activations(x01, [layer])[layer].float()
    model.to("cuda:0")
    try:
        on_gpu = model.activations(x01.to("cuda:0"), [layer])[layer].float().cpu()
    finally:
        model.to("cpu")
    scale = float(on_cpu.abs().max()) or 1.0
    assert float((on_gpu - on_cpu).abs().max()) / scale < 1e-3


def test_a_render_on_the_gpu_raises_its_objective() -> None:
    t = SelfTest(io.StringIO())
    t.load()
    detail = t.render("cuda:0")
    assert "objective" in detail
    (images,) = t.renders
    assert len(images) == 2 and all(r.image.shape[:2] == (48, 48) for r in images)
