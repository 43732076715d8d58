"""Load-time benchmark: the demo model (target: under a second after import) and resnet18.

Prints one JSON object: import time, then per model the median total load time over a few runs
and the phase breakdown of the median run (read, canonicalize, check, convert, probe, layers,
parity, device).  Never asserted in tests; run ``python benchmarks/bench_load.py [--runs N]``.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-resnet", action="store_true", help="only the demo model")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import torch

    from fvdesk.core.model.loader import load_model  # imports onnx, onnxruntime, onnx2torch
    from fvdesk.core.resources import demo_model_path

    import_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)

    models = {"demo": demo_model_path()}
    tmp = tempfile.TemporaryDirectory()
    if not args.no_resnet:
        from tests.models import torchvision_onnx

        t = time.perf_counter()
        models["resnet18"] = torchvision_onnx("resnet18", Path(tmp.name))
        export_s = time.perf_counter() - t
    result: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "import_s": round(import_s, 3),
        "models": {},
    }
    for name, path in models.items():
        runs = []
        for _ in range(args.runs):
            m = load_model(path)
            runs.append(m.timings)
        runs.sort(key=lambda r: r["total"])
        median = runs[len(runs) // 2]
        result["models"][name] = {
            "file_mb": round(path.stat().st_size / 1e6, 2),
            "layers": len(m.graph),
            "load_s_median": round(median["total"], 3),
            "load_s_min": round(runs[0]["total"], 3),
            "load_s_all": [round(r["total"], 3) for r in runs],
            "phases_s": {k: round(v, 4) for k, v in median.items() if k != "total"},
            "parity_rel": m.parity.rel_diff if m.parity else None,
            "canonicalization": m.canonicalization,
        }
        if name == "resnet18":
            result["models"][name]["export_s"] = round(export_s, 2)
    result["demo_under_1s"] = result["models"]["demo"]["load_s_median"] < 1.0
    print(json.dumps(result, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
