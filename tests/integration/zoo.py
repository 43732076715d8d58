"""A fixture zoo shaped like the ONNX files users bring: the export styles and graph shapes that
real exports have (fixed batch 1 from both torch exporters, NHWC, one channel, float16, a fixed
32 px input, a size-multiple net, two outputs, opset 20, an unconvertible tail).

Each builder takes a folder and writes its model there once (later calls return the file), so a
session folder shares them between tests.  All are a few small conv layers with a classifier
head, at 24-64 px, so every feature renders in seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tests import models as M


def _once(folder: Path, name: str, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` once per folder, then moved into place (a half-written file is never used)."""
    path = Path(folder) / f"zoo_{name}.onnx"
    if not path.exists():
        torch.manual_seed(0)
        tmp = path.with_suffix(".tmp.onnx")
        write(tmp)
        tmp.replace(path)
    return path


def _dynamo_export(model: nn.Module, path: Path, size: int, opset: int | None = None) -> Path:
    """The dynamo exporter, static shapes (batch 1), optionally at a given opset."""
    kwargs = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (torch.randn(1, 3, size, size),), dynamo=True,
            input_names=["input"], output_names=["logits"], verbose=False, **kwargs,
        )  # fmt: skip
    program.save(str(path))
    return path


class _Needs32(nn.Module):
    """Size-agnostic, but only multiples of 32 fit: five pooling levels, each level's upsampled
    features concatenated with the level above (an FPN/U-Net decoder), then a global-pool head."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
            for _ in range(5)
        )
        self.merge = nn.ModuleList(nn.Conv2d(12, 6, 1) for _ in range(5))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [self.stem(x)]
        for d in self.down:
            levels.append(d(levels[-1]))
        y = levels[-1]
        for i in range(4, -1, -1):
            y = torch.relu(self.merge[i](torch.cat([levels[i], self.up(y)], 1)))
        return self.fc(y.mean((2, 3)))


def _needs32(folder: Path) -> Path:
    return _once(
        folder, "needs32",
        lambda p: M.export_onnx(_Needs32().eval(), p, size=64, dynamic_size=True),
    )  # fmt: skip


class _TwoHeads(nn.Module):
    """A classifier and a second head (a detector's box/score outputs, a multi-task net)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = M._SmallNet(classes=8)
        self.aux = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net.pool(self.net.features(x)).flatten(1)
        return self.net.fc(f), self.aux(f)


def fixed_batch_classic(folder: Path) -> Path:
    """``torch.onnx.export`` without ``dynamic_axes``: every dimension fixed, batch 1."""
    return _once(
        folder, "fixed1_classic",
        lambda p: M.export_onnx(M._SmallNet().eval(), p, size=48, dynamic_batch=False),
    )  # fmt: skip


def fixed_batch_dynamo(folder: Path) -> Path:
    """``torch.onnx.export(..., dynamo=True)`` with its default opset: batch 1, static shapes."""
    return M.cached_export(folder, "zoo_fixed1", lambda: M._SmallNet().eval(), size=48, dynamo=True)


def opset20_dynamo(folder: Path) -> Path:
    return _once(folder, "opset20", lambda p: _dynamo_export(M._SmallNet(classes=7), p, 40, 20))


def nhwc(folder: Path) -> Path:
    """tf2onnx's layout: N x H x W x C, a Transpose first."""
    return M.small_onnx(folder, "nhwc")


def gray(folder: Path) -> Path:
    return M.small_onnx(folder, "gray")


def float16(folder: Path) -> Path:
    return _once(folder, "float16", lambda p: M.to_float16(M.small_onnx(folder, "rgb"), p))


def fixed_32px(folder: Path) -> Path:
    """A flatten before the classifier: only the native 32 x 32 fits."""
    return M.small_onnx(folder, "flatten")


def two_outputs(folder: Path) -> Path:
    return _once(folder, "two_outputs", lambda p: M.export_onnx(_TwoHeads().eval(), p, size=32))


def unconvertible_tail(folder: Path) -> Path:
    """A vendor's custom op before the classifier: the trunk converts, the head does not."""
    return M.conv_custom_op_onnx(folder)


#: name -> builder, in the order the matrix shows them.
ZOO: dict[str, Callable[[Path], Path]] = {
    "fixed1_classic": fixed_batch_classic,
    "fixed1_dynamo": fixed_batch_dynamo,
    "nhwc": nhwc,
    "gray": gray,
    "float16": float16,
    "fixed_32px": fixed_32px,
    "needs32": _needs32,
    "two_outputs": two_outputs,
    "opset20_dynamo": opset20_dynamo,
    "unconvertible_tail": unconvertible_tail,
}
