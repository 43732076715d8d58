"""Activation atlas cost on the demo model: collection and UMAP per 1k images, and per cell
rendered; prints JSON.

A folder of generated pattern images (fvdesk.core.patterns, 64 px PNGs) is made once; the
collection (decode, forward to the layer, the sampled positions) and UMAP (cosine, seeded,
single-threaded) are timed on it, then the cells' renders through the atlas runner (chunks of
--batch directions).  UMAP's one-off numba compilation is timed apart (a warm-up on 200 random
vectors), since a long-lived process or the app pays it once.

    python benchmarks/bench_actatlas.py                       # 1,000 images, 64 steps
    python benchmarks/bench_actatlas.py --images 200 --steps 16 --cells 8   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--per-image", type=int, default=8)
    ap.add_argument("--layer", default="/features/block4/relu/Relu")
    ap.add_argument("--grid", type=int, default=20)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cells", type=int, default=16, help="cells rendered for the per-cell time")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import numpy as np
    import torch

    from fvdesk.core.actatlas import build
    from fvdesk.core.actatlas.collect import collect
    from fvdesk.core.actatlas.layout import grid_cells, reduce_2d
    from fvdesk.core.actatlas.spec import DEFAULT_MAX_BYTES, ActivationAtlasJob
    from fvdesk.core.jobs.job import Job
    from fvdesk.core.jobs.run import run_job
    from fvdesk.core.model.loader import load_model
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.settings import RenderSettings
    from fvdesk.core.resources import demo_model_path
    from tests.images import pattern_folder

    dev = torch.device(args.device)
    model = load_model(demo_model_path(), device=args.device, check_parity=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = pattern_folder(Path(tmp) / "images", max(1, args.images // 8))
        n = len(list(root.rglob("*.png")))
        t = time.perf_counter()
        reduce_2d(np.random.default_rng(0).random((200, 16), np.float32), seed=0, neighbors=15,
                  min_dist=0.05)  # fmt: skip
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        col = drive(collect(model, root, args.layer, per_image=args.per_image, seed=0,
                            max_vectors=0, max_bytes=DEFAULT_MAX_BYTES, pre=model.preprocessing,
                            device=dev, cancelled=lambda: False))  # fmt: skip
        collect_s = time.perf_counter() - t
        t = time.perf_counter()
        xy = reduce_2d(col.vectors, seed=0, neighbors=15, min_dist=0.05)
        umap_s = time.perf_counter() - t
        cells, _, _ = grid_cells(xy, col.vectors, args.grid, 3, 0)

        # the cells' renders through the runner: a small atlas (its own collection not timed)
        small = pattern_folder(Path(tmp) / "small", 4)
        spec = ActivationAtlasJob(str(small), args.layer, str(Path(tmp) / "atlas"), grid=6,
                                  per_image=8, classes=False)  # fmt: skip
        settings = RenderSettings(steps=args.steps, batch=args.batch, device=args.device)
        job = Job.for_model(model, spec, settings)
        t0 = [0.0]
        marks: list[float] = []

        def on(ev) -> None:
            from fvdesk.core.output.actatlas import AtlasLaidOut, CellRendered

            if isinstance(ev, AtlasLaidOut):
                t0[0] = time.perf_counter()
            elif isinstance(ev, CellRendered):
                marks.append(time.perf_counter())

        res = drive(run_job(model, job, device=dev), on)
        assert isinstance(res, build.ActivationAtlasResult)
        cell_s = (marks[-1] - t0[0]) / max(len(marks), 1) if marks else float("nan")
    k = 1000.0 / n
    print(json.dumps({
        "benchmark": "activation atlas", "model": "demo.onnx", "layer": args.layer,
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "images": n, "per_image": args.per_image,
        "vectors": int(len(col.vectors)), "channels": int(col.vectors.shape[1]),
        "grid": args.grid, "cells_with_3_or_more": len(cells),
        "umap_compile_s": round(compile_s, 2),
        "collect_s_per_1k_images": round(collect_s * k, 3),
        "umap_s_per_1k_images": round(umap_s * k, 3),
        "collect_plus_umap_s_per_1k_images": round((collect_s + umap_s) * k, 3),
        "render_steps": args.steps, "render_batch": args.batch,
        "cells_rendered": len(marks), "s_per_cell_rendered": round(cell_s, 3),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
