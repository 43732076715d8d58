"""Time per image view (fvdesk.core.inspect): open + prepare, prediction, layer activations,
attribution (activation x gradient and integrated gradients), neuron groups, and the views that
render (activation grid, inversion, caricature, accentuation) at a given step count.

Prints one JSON object.  Default: the demo model on a generated pattern image; ``--model`` and
``--image`` try another model (``--layer``/``--to-layer`` then name its layers; default: the
deepest and a middle feature map).  Never asserted in tests; run
``python benchmarks/bench_inspect.py [--steps N] [--model M.onnx --image I.png]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn, runs: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return round(best, 4), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--image", type=Path)
    ap.add_argument("--layer")
    ap.add_argument("--to-layer")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3, help="best of N for the analysis views")
    ap.add_argument("--groups", type=int, default=6)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import numpy as np
    import torch

    from fvdesk.core.inspect import analysis as an
    from fvdesk.core.inspect import (
        runners,  # noqa: F401
        specs,
    )
    from fvdesk.core.inspect.image import open_image
    from fvdesk.core.jobs.job import Job
    from fvdesk.core.jobs.run import run_job
    from fvdesk.core.model.loader import load_model
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.settings import RenderSettings
    from fvdesk.core.resources import demo_model_path

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    image = args.image
    if image is None:
        from fvdesk.core.patterns import generate
        from tests.images import save_png

        x, _ = generate(1, 64, seed=3)
        image = save_png(Path(tmp.name) / "pattern.png", x[0])
    model = load_model(args.model or demo_model_path(), device=args.device, check_parity=False)
    feats = [x for x in model.graph if x.kind == "feature" and x.spatial and min(x.spatial) > 1]
    layer = args.layer or feats[-1].name
    to_layer = args.to_layer or feats[len(feats) // 2].name
    out: dict = {"python": platform.python_version(), "torch": torch.__version__,
                 "threads": args.threads, "device": args.device, "model": model.name,
                 "input": model.input.describe_size(), "layer": layer, "to_layer": to_layer,
                 "steps": args.steps, "seconds": {}}  # fmt: skip
    sec = out["seconds"]
    sec["open_image"], img = _timed(lambda: open_image(image, model), args.runs)
    sec["predict"], pred = _timed(lambda: an.predict(model, img), args.runs)
    if pred is not None:
        out["prediction"] = [(c.index, c.label, round(c.probability, 4)) for c in pred.classes]
    sec["layer_activations"], acts = _timed(
        lambda: an.layer_activations(model, img, layer), args.runs
    )
    out["top_units"] = [int(u) for u in acts.order[:5]]
    target = "top" if model.graph.logits is not None else f"{layer}:{out['top_units'][0]}"
    if model.graph[layer].index > model.graph[to_layer].index or target == "top":
        sec["attribution"], _ = _timed(
            lambda: an.attribute(model, img, target, to_layer), args.runs
        )
        sec["attribution_ig16"], _ = _timed(
            lambda: an.attribute(model, img, target, to_layer, method="integrated", steps=16), 1
        )
    sec["neuron_groups"], g = _timed(
        lambda: an.neuron_groups(model, img, layer, args.groups), args.runs
    )
    out["groups_error"] = round(g.error, 4)
    settings = RenderSettings(steps=args.steps, device=args.device)
    views = {
        "grid": specs.GridJob.of(img, layer, model.graph, threshold=0.1),
        "inversion": specs.InversionJob.of(img, to_layer),
        "caricature": specs.InversionJob.of(img, layer, caricature=True),
        "accentuate_1unit": specs.AccentuateJob.of(img, layer, [out["top_units"][0]]),
        "groups_job": specs.GroupsJob.of(img, layer, groups=args.groups),
    }
    for name, spec in views.items():
        t = time.perf_counter()
        r = drive(run_job(model, Job.for_model(model, spec, settings)))
        sec[name] = round(time.perf_counter() - t, 3)
        if name == "grid":
            out["grid_cells_rendered"] = len(r.results)
            out["grid_s_per_cell"] = round(sec[name] / max(1, len(r.results)), 4)
    out["heatmap_mean"] = float(np.mean(acts.heatmap(out["top_units"][0])))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
