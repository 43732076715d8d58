"""Train, export and verify fvdesk's embedded demo model (``resources/models/demo.onnx``).

The demo model is a small CNN trained on the procedural patterns of ``fvdesk.core.patterns``.
It ships with the app (so there is something to open with no downloads) and the engine's tests
check renders against it, so it must be reproducible: fixed seeds, deterministic CPU kernels and
fresh generated batches every step (infinite data, no dataset to store). The export carries
its labels and preprocessing in the ONNX ``metadata_props`` so the app needs no side files.

Retrain the shipped model (from the repository root)::

    .venv/bin/python tools/train_demo_model.py

Everything is checked after export: onnxruntime must match torch's accuracy and onnx2torch (the
converter the engine uses) must reproduce onnxruntime's logits.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a source checkout
    sys.path.insert(0, str(REPO_ROOT))

from fvdesk.core.patterns import CLASSES, generate  # noqa: E402

MEAN = 0.5
STD = 0.25
PREPROCESSING = {"range": [0, 1], "mean": [MEAN] * 3, "std": [STD] * 3, "bgr": False}
CHANNELS = (16, 32, 64, 96)
MODEL_NAME = "demo.onnx"
LABELS_NAME = "demo.labels.txt"
EVAL_SEED_OFFSET = 1_000_003  # evaluation images come from a stream training never sees


class ConvBlock(nn.Sequential):
    """conv -> bn -> relu (-> 2x2 max-pool): named children give ONNX node names a tree."""

    def __init__(self, cin: int, cout: int, pool: bool) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(),
        )
        if pool:
            layers["pool"] = nn.MaxPool2d(2)
        super().__init__(layers)


class DemoNet(nn.Module):
    """Four conv blocks, global average pooling (any input size), one linear layer to logits."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        cin = 3
        for i, cout in enumerate(CHANNELS, start=1):
            blocks[f"block{i}"] = ConvBlock(cin, cout, pool=i < len(CHANNELS))
            cin = cout
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def preprocess(images01: np.ndarray) -> np.ndarray:
    """The exact normalization recorded in the metadata: ``(x - 0.5) / 0.25``."""
    return ((images01 - MEAN) / STD).astype(np.float32)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "resources" / "models")
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=64, help="fresh images per step")
    parser.add_argument("--size", type=int, default=64, help="training image size (pixels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate")
    parser.add_argument("--eval-images", type=int, default=2048, help="fresh images to score")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 2 or args.eval_images < 1:
        parser.error("--steps and --eval-images must be >= 1 and --batch >= 2")
    return args


def train(model: DemoNet, args: argparse.Namespace) -> None:
    """Adam with a one-cycle schedule on a fresh generated batch every step."""
    rng = np.random.default_rng(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    running = None
    for step in range(1, args.steps + 1):
        images, labels = generate(args.batch, args.size, rng=rng)
        logits = model(torch.from_numpy(preprocess(images)))
        loss = loss_fn(logits, torch.from_numpy(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step:5d}/{args.steps}  loss {running:.4f}", file=sys.stderr, flush=True)


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    return np.concatenate(
        [model(torch.from_numpy(x[i : i + chunk])).numpy() for i in range(0, len(x), chunk)]
    )


def export_onnx(model: DemoNet, size: int) -> onnx.ModelProto:
    """Export with the TorchScript exporter (stable names, opset 17, dynamic batch and size)."""
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter is deprecated but names nodes best
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            buf,
            dynamo=False,
            opset_version=17,
            do_constant_folding=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    fold_identities(proto)
    name_initializers(proto)
    return proto


def fold_identities(proto: onnx.ModelProto) -> int:
    """Remove Identity nodes by pointing their consumers at their input.

    The exporter emits them for deduplicated identical initializers, and onnx2torch 1.5.15
    cannot convert them. Identities that feed a graph output are kept (renaming would change
    the output name). Returns how many were removed.
    """
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            src = node.input[0]
            rename[node.output[0]] = rename.get(src, src)
        else:
            keep.append(node)
    if not rename:
        return 0
    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(keep)
    return len(rename)


def name_initializers(proto: onnx.ModelProto) -> None:
    """Give the exporter's anonymous ``onnx::Conv_46`` weights their module's name.

    Conv and BatchNorm are fused on export, so the conv weights are new tensors; naming them
    ``features.block1.conv.weight`` / ``.bias`` keeps the model readable in any ONNX viewer.
    """
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    rename: dict[str, str] = {}
    for node in graph.node:
        module = ".".join(node.name.strip("/").split("/")[:-1])
        for name, role in zip(node.input[1:], ("weight", "bias"), strict=False):
            if name in inits and name.startswith("onnx::") and module:
                rename[name] = f"{module}.{role}"
    if len(set(rename.values())) != len(rename):  # shared weights: leave names alone
        return
    for old, new in rename.items():
        inits[old].name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)


def add_metadata(proto: onnx.ModelProto, summary: dict[str, object]) -> None:
    """Labels and preprocessing for the app; author, description and training run for people."""
    props = {
        "fvdesk.labels": json.dumps(list(CLASSES)),
        "fvdesk.preprocessing": json.dumps(PREPROCESSING),
        # The graph accepts any size; this is the size it was trained at, the app's default canvas.
        "fvdesk.input_size": json.dumps([summary["size"], summary["size"]]),
        "fvdesk.training": json.dumps(summary, sort_keys=True),
        "model_author": "fvdesk project (tools/train_demo_model.py)",
    }
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = (
        "fvdesk demo model: a small CNN (4 conv blocks, global average pooling, linear) trained "
        "on procedurally generated pattern images (fvdesk.core.patterns) to recognize "
        f"{len(CLASSES)} classes: {', '.join(CLASSES)}. Input 'image': float32 NCHW RGB of any "
        "size, normalized as (x01 - 0.5) / 0.25. Output 'logits': (N, 8)."
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, so readers never see a half-written model."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the shipped files must be world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify(
    model: DemoNet, proto: onnx.ModelProto, images: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Score torch and onnxruntime on the same images and check onnx2torch reproduces ORT."""
    from onnx2torch import convert

    x = preprocess(images)
    onnx.checker.check_model(proto)
    assert not any(n.op_type == "Identity" for n in proto.graph.node), "Identity left in graph"
    torch_acc = float((torch_logits(model.eval(), x).argmax(1) == labels).mean())
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_out = sess.run(["logits"], {"image": x})[0]
    ort_acc = float((ort_out.argmax(1) == labels).mean())
    # Another input size, to prove the dynamic height/width really work.
    odd = preprocess(generate(4, 80, seed=1)[0])
    ort_odd = sess.run(["logits"], {"image": odd})[0]
    converted = convert(proto).eval()
    conv_diff = max(
        float(np.abs(torch_logits(converted, x[:64]) - ort_out[:64]).max()),
        float(np.abs(torch_logits(converted, odd) - ort_odd).max()),
    )
    if conv_diff > 1e-4:
        raise RuntimeError(f"onnx2torch output differs from onnxruntime by {conv_diff:.2e}")
    if abs(torch_acc - ort_acc) > 1.0 / len(labels) + 1e-9:
        raise RuntimeError(f"accuracy differs: torch {torch_acc:.4f}, onnxruntime {ort_acc:.4f}")
    return {
        "torch_accuracy": torch_acc,
        "onnxruntime_accuracy": ort_acc,
        "onnx2torch_diff": conv_diff,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(args.seed)
        model = DemoNet()
        start = time.perf_counter()
        train(model, args)
        seconds = time.perf_counter() - start

        eval_images, eval_labels = generate(
            args.eval_images, args.size, seed=args.seed + EVAL_SEED_OFFSET
        )
        proto = export_onnx(model, args.size)
        scores = verify(model, proto, eval_images, eval_labels)
        summary: dict[str, object] = {
            "accuracy": round(scores["onnxruntime_accuracy"], 4),
            "torch_accuracy": round(scores["torch_accuracy"], 4),
            "eval_images": args.eval_images,
            "steps": args.steps,
            "batch": args.batch,
            "size": args.size,
            "seed": args.seed,
            "train_seconds": round(seconds, 1),
            "params": sum(p.numel() for p in model.parameters()),
        }
        add_metadata(proto, {k: v for k, v in summary.items() if k != "train_seconds"})

        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out / MODEL_NAME, proto.SerializeToString())
        write_atomic(args.out / LABELS_NAME, ("\n".join(CLASSES) + "\n").encode("utf-8"))
        summary["onnx2torch_max_abs_diff"] = float(f"{scores['onnx2torch_diff']:.3g}")
        summary["onnx_bytes"] = (args.out / MODEL_NAME).stat().st_size
        summary["out"] = str(args.out / MODEL_NAME)
        print(json.dumps(summary))
        return 0
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


if __name__ == "__main__":
    sys.exit(main())
