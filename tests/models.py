"""Test models built locally: torchvision architectures with random weights, exported to ONNX.

Nothing is downloaded.  Exports are cached per session folder so several tests share one file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

# Architectures the foundation issue requires to load with parity.
TORCHVISION_ARCHS = (
    "googlenet",
    "resnet18",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
    "squeezenet1_1",
    "densenet121",
    "shufflenet_v2_x1_0",
)


def build_torchvision(arch: str, seed: int = 0) -> nn.Module:
    """A torchvision classifier with deterministic random weights, in eval mode."""
    import torchvision

    torch.manual_seed(seed)
    kwargs: dict = {"weights": None}
    if arch == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    if arch.startswith("inception"):
        kwargs.update(aux_logits=False, init_weights=True)
    model = getattr(torchvision.models, arch)(**kwargs)
    return model.eval()


def export_onnx(
    model: nn.Module,
    path: Path,
    *,
    size: int = 224,
    channels: int = 3,
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
    input_name: str = "input",
    example: torch.Tensor | None = None,
) -> Path:
    """Export with the classic exporter (what most users' files come from)."""
    x = example if example is not None else torch.randn(1, channels, size, size)
    axes: dict = {}
    if dynamic_batch:
        axes.setdefault(input_name, {})[0] = "batch"
        axes["logits"] = {0: "batch"}
    if dynamic_size:
        axes.setdefault(input_name, {}).update({2: "height", 3: "width"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            x,
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[input_name],
            output_names=["logits"],
            dynamic_axes=axes or None,
        )
    return path


def torchvision_onnx(
    arch: str, folder: Path, *, size: int = 224, opset: int = 17, seed: int = 0
) -> Path:
    """Export (once per folder) a random-weight torchvision architecture."""
    path = Path(folder) / f"{arch}_{size}_op{opset}_s{seed}.onnx"
    if not path.exists():
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(build_torchvision(arch, seed), tmp, size=size, opset=opset)
        tmp.replace(path)
    return path


def light_zoo_models() -> list[Path]:
    """The nine legacy ONNX-zoo architectures shipped inside the onnx package (opset 9)."""
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return sorted(folder.glob("light_*.onnx"))
