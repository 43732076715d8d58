"""Atlas throughput: units rendered and committed per minute, on the demo model and on resnet18.

Runs the real atlas (render + PNG + manifest commit per unit) on one mid-depth ReLU layer of each
model, at 128 steps by default, on the CPU and on CUDA when available; prints JSON.  Model loading
and the one-off warm-up batch are not timed.  resnet18 has random weights (exported locally with
torchvision; nothing is downloaded) — throughput does not depend on the weights.

    python benchmarks/bench_atlas.py                     # a few minutes on a laptop CPU
    python benchmarks/bench_atlas.py --steps 32 --units 4 --models demo     # a quick look
    python benchmarks/bench_atlas.py --devices cuda --units 64 --batch 32   # a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def export_resnet18(folder: Path) -> Path:
    """resnet18 with deterministic random weights, exported with a dynamic batch."""
    import torch
    import torchvision

    path = folder / "resnet18_random.onnx"
    if path.exists():
        return path
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.randn(1, 3, 224, 224),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def middle_relu(model) -> str:
    """A mid-depth ReLU feature map: representative cost, neither the first conv nor the head."""
    feats = [x for x in model.graph if x.kind == "feature"]
    relus = [x for x in feats if x.op == "Relu"] or feats
    return relus[len(relus) // 2].name


def bench_one(path: Path, label: str, device: str, args: argparse.Namespace, work: Path) -> dict:
    import torch

    from fvdesk.core.device import describe_device, pick_device
    from fvdesk.core.jobs.job import UnitJob
    from fvdesk.core.jobs.run import render_units
    from fvdesk.core.model.loader import load_model
    from fvdesk.core.optim.settings import RenderSettings
    from fvdesk.core.output.atlas import Atlas, plan_atlas

    dev = pick_device(device)
    model = load_model(path, device=dev, check_parity=False)
    layer = args.layer.get(label) or middle_relu(model)
    size = args.size or {"demo": 64}.get(label, 128)
    settings = RenderSettings(steps=args.steps, size=size, batch=args.batch, device=str(dev))
    # Warm-up (kernels, allocator, extractor cache) outside the timing.
    warm = RenderSettings(steps=2, size=size, batch=args.batch, device=str(dev))
    for _ in render_units(model, UnitJob(layer, list(range(min(args.batch, 2)))), warm, device=dev):
        pass
    plan = plan_atlas(model, layers=[layer], units_per_layer=args.units)
    out = work / f"{label}-{dev.type}"
    runner = Atlas(model, out, plan, settings)
    todo = runner.prepare()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    gen = runner.run()
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        summary = stop.value
    seconds = time.perf_counter() - t0
    return {
        "model": label,
        "layer": layer,
        "device": describe_device(dev),
        "steps": args.steps,
        "size": size,
        "batch": args.batch,
        "units": summary.rendered,
        "planned": todo.total,
        "seconds": round(seconds, 2),
        "units_per_minute": round(60.0 * summary.rendered / seconds, 2) if seconds > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", default="demo,resnet18", help="comma list of demo, resnet18, or ONNX paths"
    )
    p.add_argument(
        "--devices", default="auto", help="comma list; auto = cpu plus cuda when available"
    )
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--units", type=int, default=8, help="units rendered per model and device")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--size", type=int, default=None, help="canvas px (default: 64 demo, 128 others)"
    )
    p.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="MODEL=LAYER",
        help="override the layer of a model",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--cache", type=Path, default=None, help="folder for the exported resnet18 (default: temp)"
    )
    args = p.parse_args(argv)
    args.layer = dict(x.split("=", 1) for x in args.layer)

    import torch

    from fvdesk import __version__
    from fvdesk.core.resources import demo_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if devices == ["auto"]:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="fvdesk-bench-") as tmp:
        work = Path(tmp)
        cache = args.cache or work
        cache.mkdir(parents=True, exist_ok=True)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name == "demo":
                path = demo_model_path()
            elif name == "resnet18":
                path = export_resnet18(cache)
            else:
                path = Path(name)
            label = name if name in ("demo", "resnet18") else path.stem
            for device in devices:
                try:
                    results.append(bench_one(path, label, device, args, work))
                except Exception as e:  # noqa: BLE001 - report and go on with the other runs
                    results.append(
                        {"model": label, "device": device, "error": f"{type(e).__name__}: {e}"}
                    )
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "atlas",
        "fvdesk": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "results": results,
    }
    print(json.dumps(report, indent=2))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
