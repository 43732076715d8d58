"""Test models built locally: torchvision architectures with random weights, exported to ONNX.

Nothing is downloaded.  Exports are cached per session folder so several tests share one file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tests import builders as B

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


# -- small purpose-built models (loader tests) -------------------------------------------------
class _SmallNet(nn.Module):
    """conv-relu-pool x2, then a global pool (any size) or a fixed flatten, and a linear head."""

    def __init__(self, channels: int = 3, classes: int = 10, head: str = "global") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16 if head == "global" else 16 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.head == "global":
            x = self.pool(x).flatten(1)
        elif self.head == "view1":  # a fixed reshape: batch must be 1 and the size 32x32
            x = x.view(1, 16 * 8 * 8)
        else:  # "flatten": any batch, but only the native size fits the linear layer
            x = x.flatten(1)
        return self.fc(x)


class _NHWCNet(nn.Module):
    """What tf2onnx exports look like from outside: an N x H x W x C input."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _SmallNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def small_onnx(folder: Path, kind: str = "rgb", seed: int = 0) -> Path:
    """Small exported models: ``rgb``, ``gray`` (1 channel), ``nhwc``, ``view1`` (fixed reshape
    [1, -1]: batch 1 and 32x32 only), ``flatten`` (fixed size, any batch), ``dynamic`` (dynamic
    height/width)."""
    path = Path(folder) / f"small_{kind}_s{seed}.onnx"
    if path.exists():
        return path
    torch.manual_seed(seed)
    size = 32
    tmp = path.with_suffix(".tmp.onnx")
    if kind == "nhwc":
        model = _NHWCNet().eval()
        export_onnx(model, tmp, example=torch.randn(1, size, size, 3))
    elif kind == "gray":
        export_onnx(_SmallNet(channels=1).eval(), tmp, size=size, channels=1)
    elif kind in ("view1", "flatten"):
        export_onnx(_SmallNet(head=kind).eval(), tmp, size=size, dynamic_batch=kind != "view1")
    elif kind == "dynamic":
        export_onnx(_SmallNet().eval(), tmp, size=size, dynamic_size=True)
    else:
        export_onnx(_SmallNet().eval(), tmp, size=size)
    tmp.replace(path)
    return path


def big_onnx(folder: Path, megabytes: int = 100, seed: int = 0) -> Path:
    """A VGG-ish random-weight classifier of about ``megabytes`` MB, built with onnx.helper
    (exporting a 100 MB torch model would take far longer): convs on a 64x64 input, then a wide
    Gemm that holds almost all the weights."""
    import numpy as np
    from onnx import helper, numpy_helper

    path = Path(folder) / f"big_{megabytes}mb_s{seed}.onnx"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    size, c1, c2 = 64, 16, 32
    flat = c2 * (size // 4) * (size // 4)  # 8192
    hidden = max(1, int(megabytes * 1e6 / 4 / flat))
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((c1, 3, 3, 3)) * 0.3).astype(np.float32), "w1"
        ),
        numpy_helper.from_array(np.zeros(c1, np.float32), "b1"),
        numpy_helper.from_array(
            (rng.standard_normal((c2, c1, 3, 3)) * 0.1).astype(np.float32), "w2"
        ),
        numpy_helper.from_array(np.zeros(c2, np.float32), "b2"),
        numpy_helper.from_array(
            rng.standard_normal((hidden, flat), dtype=np.float32) * np.float32(0.01), "w3"
        ),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b3"),
        numpy_helper.from_array(
            (rng.standard_normal((10, hidden)) * 0.01).astype(np.float32), "w4"
        ),
        numpy_helper.from_array(np.zeros(10, np.float32), "b4"),
    ]
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="block1/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="block1/relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="block1/pool", **pool),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="block2/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="block2/relu"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="block2/pool", **pool),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["hr"], name="fc1/relu"),
        helper.make_node("Gemm", ["hr", "w4", "b4"], ["logits"], name="fc2", transB=1),
    ]
    inputs, outputs = [B.tensor("x", ["N", 3, size, size])], [B.tensor("logits", ["N", 10])]
    return B.save_onnx(B.onnx_model(nodes, inputs, outputs, inits, name="big"), path, atomic=True)


# -- engine fixtures -----------------------------------------------------------------------------
def dead_unit_onnx(folder: Path) -> Path:
    """conv(3->3) -> relu -> global pool -> gemm, any input size, for the dead-unit remedy.

    On a grey image channel 0 is alive, channel 1 is dead (bias -2: zero activation and zero
    gradient) but revivable, channel 2 can never fire (zero weights, bias -1).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    path = Path(folder) / "dead_units.onnx"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 3, 3, 3)) * 0.5).astype(np.float32)
    w[2] = 0.0
    b = np.array([0.0, -2.0, -1.0], np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array((rng.standard_normal((2, 3)) * 0.5).astype(np.float32), "wf"),
        numpy_helper.from_array(np.zeros(2, np.float32), "bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    inputs, outputs = [B.tensor("x", ["N", 3, "H", "W"])], [B.tensor("logits", ["N", 2])]
    model = B.onnx_model(nodes, inputs, outputs, inits, name="dead_units")
    return B.save_onnx(model, path, atomic=True)


def _save(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def two_image_inputs(folder: Path) -> Path:
    """Two image-like inputs (``left``, ``right``): which one is the image must be chosen."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["left", "w"], ["cl"], name="left_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["right", "w"], ["cr"], name="right_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["cl", "cr"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["logits"], name="flatten"),
    ]
    shape = [1, 3, 16, 16]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("left", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("right", TensorProto.FLOAT, shape),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, Path(folder) / "two_inputs.onnx")


# -- real-world families (issue 11): small configs of the same architectures ---------------------
def tiny_vit(seed: int = 0) -> nn.Module:
    """torchvision's VisionTransformer (the vit_b_16 class) at 32 px, patch 8 (a 4×4 grid plus the
    class token), 2 layers, width 24, 2 heads of 12 dims, MLP 48: every dim distinct, so token
    counts, heads and widths cannot be confused."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=24, mlp_dim=48,
        num_classes=10,
    ).eval()  # fmt: skip


def tiny_swin(seed: int = 0) -> nn.Module:
    """torchvision's SwinTransformer (the swin_t class) at 32 px: patch 4 (8×8), window 4, two
    stages (one patch merging, whose LayerNormalization broke canonicalization), width 24."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(seed)
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[1, 1], num_heads=[2, 4], window_size=[4, 4],
        stochastic_depth_prob=0.0, num_classes=10,
    ).eval()  # fmt: skip


def cached_export(folder: Path, name: str, build, *, size: int, dynamo: bool = False) -> Path:
    """Export ``build()`` once per folder, with the classic exporter or the dynamo one (default
    opset, static shapes)."""
    path = Path(folder) / f"{name}_{size}{'_dynamo' if dynamo else ''}.onnx"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.onnx")
    model = build()
    if dynamo:
        x = torch.randn(1, 3, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                verbose=False,
            )  # fmt: skip
        program.save(str(tmp))
    else:
        export_onnx(model, tmp, size=size)
    tmp.replace(path)
    return path


class _ConvLSTM(nn.Module):
    """An OCR-style network: a convolutional trunk, the width as a sequence, an LSTM, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d((4, 1)),
        )  # fmt: skip
        self.rnn = nn.LSTM(12 * 2, 16)
        self.head = nn.Linear(16, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x)  # N, 12, 2, W/2
        seq = f.flatten(1, 2).permute(2, 0, 1)  # W/2, N, 24
        out, _ = self.rnn(seq)
        return self.head(out).permute(1, 0, 2)  # N, W/2, 7


def conv_lstm_onnx(folder: Path) -> Path:
    path = Path(folder) / "conv_lstm.onnx"
    if not path.exists():
        torch.manual_seed(0)
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(_ConvLSTM().eval(), tmp, example=torch.randn(1, 3, 16, 32), dynamic_batch=False)
        tmp.replace(path)
    return path


def conv_custom_op_onnx(folder: Path) -> Path:
    """conv -> relu -> conv -> relu -> a custom-domain op (a vendor's fused head) -> gemm."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(folder) / "conv_custom.onnx"
    if path.exists():
        return path
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="stem/relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="block/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="block/relu"),
        helper.make_node("FusedPoolHead", ["r2"], ["p"], name="vendor/head", domain="com.vendor"),
        helper.make_node("Gemm", ["p", "wf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 24, 24])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("wf", 4, 8)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor", 1)]
    )
    model.ir_version = 8
    return _save(model, path)


def with_metadata(src: Path, dst: Path, props: dict[str, str]) -> Path:
    """A copy of ``src`` with ``props`` as its metadata_props."""
    import onnx

    model = onnx.load(str(src))
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    return _save(model, dst)


def to_float16(src: Path, dst: Path) -> Path:
    """``src`` with float16 weights, inputs and outputs (what onnxconverter's float16 tools and
    ``model.half()`` exports produce): onnxruntime computes it in half precision."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return _save(model, dst)


class TinyDeiT(nn.Module):
    """DeiT's layout (timm's ``deit_*_distilled``): a class and a distillation token before the
    patches, a standard encoder layer, a head on each token, averaged."""

    def __init__(self, size: int = 32, patch: int = 8, dim: int = 20, classes: int = 6) -> None:
        super().__init__()
        grid = size // patch
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.dist = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 2 + grid * grid, dim) * 0.1)
        self.block = nn.TransformerEncoderLayer(dim, 2, 36, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.head_dist = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        n = t.shape[0]
        t = torch.cat([self.cls.expand(n, -1, -1), self.dist.expand(n, -1, -1), t], 1) + self.pos
        t = self.norm(self.block(t))
        return (self.head(t[:, 0]) + self.head_dist(t[:, 1])) / 2


# -- fixed-batch exports (dataset examples, issue 16) -------------------------------------------
def fixed_batch_onnx(folder: Path, *, dynamo: bool = False, seed: int = 0) -> Path:
    """The 32 px ``_SmallNet`` exported as most users do: no ``dynamic_axes``, so the input and
    output declare batch 1 (classic exporter, or the dynamo one with its static shapes, whose
    flatten becomes a reshape to a fixed [1, 16])."""

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return _SmallNet().eval()

    if dynamo:
        return cached_export(folder, f"small_fixed_batch_s{seed}", build, size=32, dynamo=True)
    path = Path(folder) / f"small_fixed_batch_s{seed}.onnx"
    if not path.exists():
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(build(), tmp, size=32, dynamic_batch=False)
        tmp.replace(path)
    return path


class _ConcatUpNet(nn.Module):
    """U-Net/FPN-like: stride-2 convs down to 1/``multiple``, then at each level a nearest x2
    upsample concatenated with the skip, so only sizes that are multiples of ``multiple`` run."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        depth = multiple.bit_length() - 1
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(4, 4, 3, stride=2, padding=1) for _ in range(depth))
        self.up = nn.ModuleList(nn.Conv2d(8, 4, 3, padding=1) for _ in range(depth))
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [torch.relu(self.stem(x))]
        for conv in self.down:
            skips.append(torch.relu(conv(skips[-1])))
        y = skips.pop()
        for conv in self.up:
            y = nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
            y = torch.relu(conv(torch.cat([y, skips.pop()], dim=1)))
        return self.head(y.mean(dim=(2, 3)))


class _ResidualDownNet(nn.Module):
    """Residual adds across stride-2 stages: a strided conv (ceil(n/2)) plus an average pool
    (floor(n/2)), so each stage needs an even size (``stages`` stages: multiples of 2**stages)."""

    def __init__(self, stages: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, stride=2, padding=1) for _ in range(stages))
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        for conv in self.convs:
            y = torch.relu(conv(y)) + nn.functional.avg_pool2d(y, 2)
        return self.head(y.mean(dim=(2, 3)))


def needs_multiple_onnx(folder: Path, multiple: int = 32, seed: int = 0) -> Path:
    """A size-agnostic (dynamic H/W) export of ``_ConcatUpNet`` that only runs at multiples of
    ``multiple`` (a power of 2), like segmentation and detection backbones users export."""
    path = Path(folder) / f"needs_multiple_{multiple}_s{seed}.onnx"
    if not path.exists():
        torch.manual_seed(seed)
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(_ConcatUpNet(multiple).eval(), tmp, size=2 * multiple, dynamic_size=True)
        tmp.replace(path)
    return path


def residual_stride_onnx(folder: Path, stages: int = 2, seed: int = 0) -> Path:
    """A size-agnostic export of ``_ResidualDownNet``: residual adds over stride-2 stages, so it
    runs at multiples of ``2**stages`` only."""
    path = Path(folder) / f"residual_stride_{stages}_s{seed}.onnx"
    if not path.exists():
        torch.manual_seed(seed)
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(_ResidualDownNet(stages).eval(), tmp, size=32, dynamic_size=True)
        tmp.replace(path)
    return path


class _PoolTailNet(nn.Module):
    """Three 4x4 max-pools before the head, like a text classifier's tail: size-agnostic, but a
    canvas under 64 px shrinks the map below the last pool's window."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = nn.MaxPool2d(4)
        self.pool2 = nn.MaxPool2d(4)
        self.pool3 = nn.MaxPool2d(4)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool3(self.pool2(self.pool1(torch.relu(self.conv(x)))))
        return self.fc(x.mean((2, 3)))


def pool_tail_onnx(folder: Path, seed: int = 0) -> Path:
    """A size-agnostic export of ``_PoolTailNet``: runs at 64 px and more, fails below."""
    return _dynamic_size_export(folder, f"pool_tail3_s{seed}", _PoolTailNet, 96, seed)


class _OwnSizeNet(nn.Module):
    """A flatten into a dense layer: every dimension exports as dynamic, yet the graph only runs
    at 48x48 (text recognizers and small heads exported without their size)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.fc = nn.Linear(4 * 12 * 12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def own_size_onnx(folder: Path, seed: int = 0) -> Path:
    """A dynamic-size export of ``_OwnSizeNet``: fails at the default 224, runs at 48x48."""
    return _dynamic_size_export(folder, f"own_size48_s{seed}", _OwnSizeNet, 48, seed)


def _dynamic_size_export(folder: Path, name: str, build, size: int, seed: int) -> Path:
    """``build()`` exported once with dynamic H/W (cached by ``name``)."""
    path = Path(folder) / f"{name}.onnx"
    if not path.exists():
        torch.manual_seed(seed)
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(build().eval(), tmp, size=size, dynamic_size=True)
        tmp.replace(path)
    return path


def hardswish_gate_onnx(folder: Path) -> Path:
    """conv(3->3) -> Hardswish as Add/Clip/Mul/Div (PaddlePaddle's export) -> times a
    squeeze-excitation gate (pool, 1x1 conv, HardSigmoid), any input size: the MobileNetV3 /
    PP-LCNet block whose units are dead on a grey image for two reasons.

    On a grey image channel 0's gate is closed (HardSigmoid at 0) and channel 1's Hardswish
    input is below -3 (both: zero activation and zero gradient); both can fire; channel 2 is live.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = Path(folder) / "hardswish_gate.onnx"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 3, 3, 3)) * 0.5).astype(np.float32)
    b = np.array([0.0, -5.0, 0.0], np.float32)
    wg = np.diag([4.0, 0.0, 0.0]).astype(np.float32).reshape(3, 3, 1, 1)
    bg = np.array([-3.0, 5.0, 5.0], np.float32)
    f = np.float32
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(wg, "wg"),
        numpy_helper.from_array(bg, "bg"),
        numpy_helper.from_array(np.array(3.0, f), "three"),
        numpy_helper.from_array(np.array(6.0, f), "six"),
        numpy_helper.from_array(np.array(0.0, f), "zero"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "three"], ["c3"], name="add3"),
        helper.make_node("Clip", ["c3", "zero", "six"], ["r6"], name="clip"),
        helper.make_node("Mul", ["c", "r6"], ["m"], name="hswish_mul"),
        helper.make_node("Div", ["m", "six"], ["h"], name="hswish"),
        helper.make_node("GlobalAveragePool", ["h"], ["p"], name="pool"),
        helper.make_node("Conv", ["p", "wg", "bg"], ["q"], name="se"),
        helper.make_node("HardSigmoid", ["q"], ["gate"], name="gate", alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["h", "gate"], ["y"], name="gated"),
    ]
    io = [
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", 3, "H", "W"]) for n in "xy"
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "hardswish_gate", io[:1], io[1:], inits),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    onnx.save(model, str(path.with_suffix(".tmp.onnx")))
    return path.with_suffix(".tmp.onnx").replace(path)
