"""Seconds per render step: fvdesk vs the floor (forward to the target + backward to the input,
weights frozen) vs Lucent, on torchvision GoogLeNet with random weights, target ``inception4a``.

Prints one JSON document (and writes it with ``--out``).  Not a test: nothing is asserted.

    .venv/bin/python benchmarks/bench_render.py --out bench.json

* The model is exported to ONNX and loaded through ``fvdesk.core.model.loader.load_model``; torchvision's
  module ``inception4a`` is the ONNX node ``/inception4a/Concat`` (the Concat that ends the block).
* The target channel is live: the first channel whose activation on the near-grey start image is
  positive, then checked to have a non-zero input gradient in both the ONNX and native models
  (with random weights many channels are dead on that image and would render nothing).
* Methods, interleaved round by round (the order rotates) so machine drift hits them alike:
  ``fvdesk``: the time between ``StepEvent``s of ``render()`` with default settings (Fourier,
  decorrelated, the article's transforms), after warm-up steps; ``floor``: the fvdesk extractor
  (cut after the target, weights frozen), forward + backward to the input; ``lucent``:
  ``render_vis`` on the native torchvision model exactly as its users call it, timing
  ``optimizer.step`` (global optimizer step hooks), removing the forward hooks Lucent leaves on
  every module after each call.
* Components (where the time goes): weight gradients (the floor with weights trainable), layers
  after the target (the whole ONNX model, frozen), native forward + backward to the logits with
  and without weight gradients, native forward stopped at inception4a, and fvdesk's
  parameterization (FFT, colour, sigmoid), transforms and Adam step on their own.
* With CUDA, also a whole 512-unit layer at 512 steps and 224 px through ``render_units``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

# Interleaving 4 configurations of two GoogLeNets (forward, backward-data, backward-weights) needs
# more oneDNN primitives than its default cache holds (1024); evictions re-JIT kernels mid-run and
# showed up as erratic multi-second steps.  Must be set before torch initializes oneDNN.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fvdesk.core.jobs.job import UnitJob  # noqa: E402
from fvdesk.core.jobs.run import render_units  # noqa: E402
from fvdesk.core.model.loaded import LoadedModel  # noqa: E402
from fvdesk.core.model.loader import load_model  # noqa: E402
from fvdesk.core.optim import objectives as O  # noqa: E402
from fvdesk.core.optim.events import StepEvent  # noqa: E402
from fvdesk.core.optim.param import ImageParam  # noqa: E402
from fvdesk.core.optim.render import render  # noqa: E402
from fvdesk.core.optim.settings import RenderSettings, TransformSettings  # noqa: E402
from fvdesk.core.optim.transforms import RobustnessTransform  # noqa: E402
from tests.models import build_torchvision, export_onnx  # noqa: E402

TORCHVISION_TARGET = "inception4a"
ONNX_TARGET = "/inception4a/Concat"


# -- models ---------------------------------------------------------------------------------------
def native_googlenet() -> nn.Module:
    return build_torchvision("googlenet", seed=0)


def native_until_target(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision GoogLeNet.forward stopped at inception4a (transform_input is off)."""
    x = net.maxpool1(net.conv1(x))
    x = net.maxpool2(net.conv3(net.conv2(x)))
    x = net.maxpool3(net.inception3b(net.inception3a(x)))
    return net.inception4a(x)


def onnx_model(folder: Path, native: nn.Module) -> LoadedModel:
    path = folder / "googlenet_random_s0.onnx"
    if not path.exists():
        export_onnx(native, path, size=224)
    return load_model(path, preprocessing="imagenet")


def grey_start(b: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (0.5 + 0.01 * torch.randn(b, 3, size, size, generator=g)).clamp(0, 1)


def live_channel(model: LoadedModel, native: nn.Module, size: int, prefer: int | None) -> dict:
    """First channel with positive activation on the start image and a non-zero input gradient."""
    x = grey_start(1, size)
    with torch.no_grad():
        act = model.activations(x, [ONNX_TARGET])[ONNX_TARGET]
    peak = act[0].flatten(1).amax(1)
    live = [int(i) for i in torch.nonzero(peak > 0).flatten()]
    candidates = ([prefer] if prefer is not None else []) + live
    for n in candidates:
        xi = x.clone().requires_grad_(True)
        model.extractor([ONNX_TARGET])(model.prepare_input(xi))[ONNX_TARGET][:, n].mean().backward()
        g_onnx = float(xi.grad.abs().sum())
        xn = x.clone().requires_grad_(True)
        native_until_target(native, normalize(xn))[:, n].mean().backward()
        g_native = float(xn.grad.abs().sum())
        if g_onnx > 0 and g_native > 0:
            return {
                "channel": n,
                "live_channels_on_start_image": len(live),
                "channels": int(act.shape[1]),
                "input_grad_abs_sum_onnx": g_onnx,
                "input_grad_abs_sum_native": g_native,
            }
    raise SystemExit("no live channel found in inception4a")


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@contextlib.contextmanager
def frozen(module: nn.Module, frozen: bool = True) -> Iterator[None]:
    params = list(module.parameters())
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(not frozen)
    try:
        yield
    finally:
        for p, r in zip(params, was, strict=True):
            p.requires_grad_(r)
            p.grad = None


# -- timers: each returns a list of per-step seconds ------------------------------------------------
def time_calls(fn: Callable[[], None], steps: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        if i >= warmup:
            out.append(dt)
    return out


def fvdesk_steps(
    model: LoadedModel, n: int, size: int, b: int, steps: int, warmup: int
) -> list[float]:
    s = RenderSettings(
        steps=warmup + steps, size=size, batch=b, preview_every=0, device="cpu", seed=1
    )
    times, last = [], None
    for ev in render(model, O.channel(ONNX_TARGET, n), s):
        if isinstance(ev, StepEvent):
            now = time.perf_counter()
            if last is not None and ev.step > warmup:
                times.append(now - last)
            last = now
    return times


def floor_fn(
    model: LoadedModel, n: int, size: int, b: int, *, weights: bool = False, full: bool = False
) -> Callable[[], None]:
    ext = model.module if full else model.extractor([ONNX_TARGET])
    x = grey_start(b, size).requires_grad_(True)

    def step() -> None:
        with frozen(ext, frozen=not weights):
            xin = model.prepare_input(x)
            if full:
                out = ext(xin)
                out = out[0] if isinstance(out, (tuple, list)) else out
                out[:, n % out.shape[1]].mean().backward()
            else:
                ext(xin)[ONNX_TARGET][:, n].mean().backward()
        x.grad = None

    return step


def native_fn(
    net: nn.Module, n: int, size: int, b: int, *, weights: bool, until_target: bool
) -> Callable[[], None]:
    x = grey_start(b, size).requires_grad_(True)

    def step() -> None:
        with frozen(net, frozen=not weights):
            if until_target:
                native_until_target(net, normalize(x))[:, n].mean().backward()
            else:
                net(normalize(x))[:, n % 1000].mean().backward()
        x.grad = None

    return step


def component_fns(size: int, b: int) -> dict[str, Callable[[], None]]:
    param = ImageParam(b, size, size, seeds=list(range(b)))
    tf = RobustnessTransform(TransformSettings(), (size, size), seeds=list(range(b)))
    x = torch.rand(b, 3, size, size, requires_grad=True)
    opt = torch.optim.Adam(param.parameters(), lr=0.05)
    param().sum().backward()

    def p() -> None:
        param().mean().backward()

    def t() -> None:
        tf(x).mean().backward()
        x.grad = None

    return {"param_fft_colour_sigmoid": p, "transforms": t, "adam_step": opt.step}


@contextlib.contextmanager
def optimizer_step_timer() -> Iterator[list[float]]:
    """Time every ``optimizer.step`` (Lucent's closure: transforms, forward, backward, Adam)."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    times: list[float] = []
    start: list[float] = []
    pre = register_optimizer_step_pre_hook(lambda *a: start.append(time.perf_counter()))
    post = register_optimizer_step_post_hook(
        lambda *a: times.append(time.perf_counter() - start.pop())
    )
    try:
        yield times
    finally:
        pre.remove()
        post.remove()


def lucent_steps(net: nn.Module, n: int, size: int, b: int, steps: int, warmup: int) -> list[float]:
    from lucent.optvis import param, render, transform

    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with optimizer_step_timer() as times:
            render.render_vis(
                net,
                f"{TORCHVISION_TARGET}:{n}",
                param_f=lambda: param.image(size, batch=b, fft=True, decorrelate=True),
                transforms=transform.standard_transforms,
                fixed_image_size=size,
                show_image=False,
                progress=False,
                thresholds=(warmup + steps,),
            )
    for m in net.modules():  # Lucent never removes the hooks it puts on every module
        m._forward_hooks.clear()
    for p in net.parameters():
        p.grad = None
    return times[warmup:]


# -- the CPU benchmark ----------------------------------------------------------------------------
def summarize(samples: list[float]) -> dict:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "n": len(samples),
    }


def run_cpu(args: argparse.Namespace, model: LoadedModel, net: nn.Module, n: int) -> list[dict]:
    configs = [(s, b) for s in args.sizes for b in args.batches]
    methods = ["fvdesk", "floor", "lucent"]
    components = [
        "floor_with_weight_grads",
        "full_model_frozen",
        "native_full_with_weight_grads",
        "native_full_frozen",
        "native_until_target_frozen",
        "param_fft_colour_sigmoid",
        "transforms",
        "adam_step",
    ]
    samples: dict[tuple[int, int], dict[str, list[float]]] = {
        c: {m: [] for m in methods + components} for c in configs
    }
    have_lucent = True
    try:
        import lucent  # noqa: F401
    except ImportError:
        have_lucent = False
    fns: dict[tuple[int, int], dict[str, Callable[[], None]]] = {}
    for size, b in configs:
        fns[(size, b)] = {
            "floor_with_weight_grads": floor_fn(model, n, size, b, weights=True),
            "full_model_frozen": floor_fn(model, n, size, b, full=True),
            "native_full_with_weight_grads": native_fn(
                net, n, size, b, weights=True, until_target=False
            ),
            "native_full_frozen": native_fn(net, n, size, b, weights=False, until_target=False),
            "native_until_target_frozen": native_fn(
                net, n, size, b, weights=False, until_target=True
            ),
            **component_fns(size, b),
        }
    for r in range(args.rounds):
        for size, b in configs:
            names = methods + (components if r < args.component_rounds else [])
            k = r % len(names)
            for m in names[k:] + names[:k]:  # the order rotates from round to round
                got = samples[(size, b)][m]
                if m == "fvdesk":
                    got += fvdesk_steps(model, n, size, b, args.steps, args.warmup)
                elif m == "floor":
                    got += time_calls(floor_fn(model, n, size, b), args.steps, args.warmup)
                elif m == "lucent":
                    if have_lucent:
                        got += lucent_steps(net, n, size, b, args.steps, args.warmup)
                else:
                    small = m in ("param_fft_colour_sigmoid", "transforms", "adam_step")
                    got += time_calls(
                        fns[(size, b)][m], 3 * args.steps if small else args.steps, args.warmup
                    )
            print(
                f"round {r + 1}/{args.rounds} {size}px batch {b} done", file=sys.stderr, flush=True
            )
    out = []
    for size, b in configs:
        s = samples[(size, b)]
        per_step = {m: summarize(v) for m, v in s.items() if v}
        med = {m: v["median_s"] for m, v in per_step.items()}
        ratios = {"fvdesk_over_floor": med["fvdesk"] / med["floor"]}
        mins = {m: v["min_s"] for m, v in per_step.items()}
        ratios["fvdesk_over_floor_from_min"] = mins["fvdesk"] / mins["floor"]
        if "lucent" in med:
            ratios["lucent_over_fvdesk"] = med["lucent"] / med["fvdesk"]
            ratios["lucent_over_fvdesk_from_min"] = mins["lucent"] / mins["fvdesk"]
        if "native_full_with_weight_grads" in med:
            nf = med["native_full_with_weight_grads"]
            ratios["lucent_over_native_full_with_weight_grads"] = (
                med.get("lucent", float("nan")) / nf
            )
            ratios["floor_over_native_full_with_weight_grads"] = med["floor"] / nf
            ratios["fvdesk_over_native_full_with_weight_grads"] = med["fvdesk"] / nf
        where = {}
        if "floor_with_weight_grads" in med:
            where["weight_gradients_s"] = med["floor_with_weight_grads"] - med["floor"]
            where["layers_after_target_s"] = med["full_model_frozen"] - med["floor"]
            where["fvdesk_overhead_over_floor_s"] = med["fvdesk"] - med["floor"]
            where["param_fft_colour_sigmoid_s"] = med["param_fft_colour_sigmoid"]
            where["transforms_s"] = med["transforms"]
            where["adam_step_s"] = med["adam_step"]
        out.append(
            {
                "size": size,
                "batch": b,
                "per_step": per_step,
                "per_image_step_s": {m: v / b for m, v in med.items()},
                "ratios": ratios,
                "where_the_time_goes": where,
            }
        )
    return out


# -- the GPU benchmark ----------------------------------------------------------------------------
def run_gpu(args: argparse.Namespace, model: LoadedModel) -> list[dict]:
    """A whole 512-unit layer at 512 steps and 224 px, in batches (target: under 30 s on an H100)."""
    results = []
    channels = model.graph[ONNX_TARGET].channels
    for amp in args.gpu_amp:
        s = RenderSettings(
            steps=args.gpu_steps,
            size=224,
            batch=args.gpu_batch,
            preview_every=0,
            device="cuda",
            amp=amp,
            channels_last=True,
        )
        # warm-up: cuDNN autotuning and allocator
        for _ in render_units(
            model,
            UnitJob(ONNX_TARGET, list(range(args.gpu_batch))),
            RenderSettings(**{**s.to_dict(), "steps": 8}),
        ):
            pass
        torch.cuda.synchronize()
        t = time.perf_counter()
        notices = []
        gen = render_units(model, UnitJob(ONNX_TARGET, list(range(channels))), s)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                units = stop.value
                break
            if hasattr(ev, "message"):
                notices.append(ev.message)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        results.append(
            {
                "units": len(units),
                "steps": args.gpu_steps,
                "size": 224,
                "batch": args.gpu_batch,
                "amp_bfloat16": amp,
                "channels_last": True,
                "seconds": seconds,
                "target_s": 30.0,
                "dead_units": sum(u.dead for u in units),
                "notices": notices[:10],
                "device": torch.cuda.get_device_name(),
            }
        )
        print(f"gpu amp={amp}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return results


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("torchvision", "onnx2torch", "torch-lucent", "kornia"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per method per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--component-rounds", type=int, default=3, help="rounds that also time the components"
    )
    ap.add_argument("--channel", type=int, default=None, help="preferred inception4a channel")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    ap.add_argument("--gpu-batch", type=int, default=128)
    ap.add_argument("--gpu-steps", type=int, default=512)
    ap.add_argument(
        "--gpu-amp",
        type=lambda s: s.lower() in ("1", "true", "on"),
        nargs="+",
        default=[False, True],
    )
    ap.add_argument("--cache", type=Path, default=None, help="folder for the exported ONNX file")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    folder = args.cache or Path(tempfile.gettempdir()) / "fvdesk_bench"
    folder.mkdir(parents=True, exist_ok=True)
    net = native_googlenet()
    model = onnx_model(folder, net)
    target = live_channel(model, net, 224, args.channel)
    doc: dict = {
        "benchmark": "fvdesk render step vs floor vs Lucent",
        "model": "torchvision googlenet, random weights (seed 0), exported to ONNX (opset 17), loaded by fvdesk",
        "target": {"torchvision": TORCHVISION_TARGET, "onnx_node": ONNX_TARGET, **target},
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_start": list(os.getloadavg()),
        },
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "cache")},
        "fvdesk_render_settings": RenderSettings(preview_every=0).to_dict(),
    }
    if not args.skip_cpu:
        doc["cpu"] = run_cpu(args, model, net, target["channel"])
    doc["machine"]["load_average_end"] = list(os.getloadavg())
    if not args.skip_gpu and torch.cuda.is_available():
        doc["gpu"] = run_gpu(args, model)
    else:
        doc["gpu"] = None
    text = json.dumps(doc, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
