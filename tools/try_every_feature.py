"""Run every headless feature of fvdesk on ONNX files, the way users reach them: through the CLI
(``fvdesk.cli.main``, in-process), at tiny step counts and sizes.

    python tools/try_every_feature.py MODEL.onnx [MODEL.onnx ...] [--steps 4] [--size 32]
        [--only unit,atlas,...] [--json]

One line per feature: ``ok``, ``refused: <the CLI's sentence>`` (exit 1 naming the problem, an
answer a user can act on) or ``FAIL: ...`` (an internal error, a traceback, another exit code,
or a result that is wrong, e.g. an atlas resume that renders again).  With several models, a
table (features x models) follows.  Exit status 1 when any cell fails.

tests/integration/test_zoo_matrix.py imports this file: the matrix is defined here only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

OK, REFUSED, FAIL = "ok", "refused", "FAIL"


@dataclass(frozen=True)
class Outcome:
    status: str  # OK, REFUSED or FAIL
    message: str = ""

    def __str__(self) -> str:
        return self.status if self.status == OK else f"{self.status}: {self.message}"


@dataclass
class Context:
    """What the features of one model share: its layers and a work folder."""

    model: str
    work: Path
    steps: int
    size: int
    images: Path
    generator: Path
    layer: str | None = None  # a mid feature layer (None: the CLI's default)
    position: str | None = None  # the centre of that layer's grid
    channels: int = 0
    logs: list[str] = field(default_factory=list)
    listed: Outcome = Outcome(OK)

    def out(self, name: str) -> str:
        return str(self.work / name)

    def render(self, *extra: str) -> list[str]:
        return ["render", self.model, "--quiet", "--steps", str(self.steps),
                "--size", str(self.size), *extra]  # fmt: skip

    def unit(self, *extra: str) -> list[str]:
        return self.render(*self.layer_args(), "--units", "0", *extra)

    def layer_args(self) -> list[str]:
        return ["--layer", self.layer] if self.layer else []


def call(argv: Sequence[str], logs: list[str] | None = None) -> tuple[int, str, str]:
    """``fvdesk.cli.main(argv)`` with its stdout and stderr captured."""
    from fvdesk.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:  # noqa: PERF203 - main() should return, not exit
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001 - an exception escaping main() is a finding
            import traceback

            traceback.print_exc(file=err)
            rc = f"raised {type(e).__name__}: {e}"
    if logs is not None:
        logs.append(f"$ fvdesk {' '.join(argv)}\n-> {rc}\n{out.getvalue()}{err.getvalue()}")
    return rc, out.getvalue(), err.getvalue()


def judge(rc: object, stdout: str, stderr: str) -> Outcome:
    """ok, a one-sentence refusal, or a failure (the rules of issue 16)."""
    text = stdout + stderr
    if "internal error" in text or "Traceback (most recent call last)" in text:
        lines = [ln for ln in text.splitlines() if "internal error" in ln or "Error" in ln]
        return Outcome(FAIL, (lines or ["a traceback"])[0].strip())
    if rc == 0:
        return Outcome(OK)
    errors = [ln for ln in stderr.splitlines() if ln.startswith("fvdesk") and "error:" in ln]
    if rc in (1, 2) and len(errors) == 1:  # a failure or a usage error, said in one sentence
        return Outcome(REFUSED, errors[0].split("error:", 1)[1].strip())
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "(nothing printed)"
    return Outcome(FAIL, f"exit {rc}: {last}")


def run(ctx: Context, argv: Sequence[str]) -> Outcome:
    return judge(*call(argv, ctx.logs))


# -- the features -----------------------------------------------------------------------------
def _from(ctx: Context) -> Outcome:
    first = run(ctx, ctx.unit("--out", ctx.out("from_src")))
    if first.status != OK:
        return first
    rc, out, err = call(["render", "--quiet", "--from", ctx.out("from_src")], ctx.logs)
    got = judge(rc, out, err)
    m = re.search(r"Reproduced (\d+) item\(s\).*?; (\d+) identical", out)
    if got.status == OK and m and m[1] != m[2]:
        return Outcome(FAIL, m[0])
    return got


def _atlas_args(ctx: Context, out: str, *extra: str) -> list[str]:
    layers = ["--layers", ctx.layer] if ctx.layer else []
    return ["atlas", ctx.model, "--steps", str(ctx.steps), "--size", str(ctx.size),
            *layers, "--units-per-layer", "2", "--out", out, *extra]  # fmt: skip


def _atlas_resume(ctx: Context) -> Outcome:
    first = run(ctx, [*_atlas_args(ctx, ctx.out("atlas_resume")), "--quiet"])
    if first.status != OK:
        return first
    rc, out, err = call(_atlas_args(ctx, ctx.out("atlas_resume")), ctx.logs)
    got = judge(rc, out, err)
    m = re.search(r"(\d+) rendered, (\d+) already done", out)
    if got.status == OK and (not m or m[1] != "0"):
        return Outcome(FAIL, f"the second run rendered again: {m[0] if m else out.strip()}")
    return got


def _atlas_shards(ctx: Context) -> Outcome:
    folder = ctx.out("atlas_shards")
    for shard in ("0/2", "1/2"):
        got = run(ctx, [*_atlas_args(ctx, folder, "--shard", shard), "--quiet"])
        if got.status != OK:
            return got
    return run(ctx, ["atlas", "--quiet", "--merge", folder])


def _examples(engine: str) -> Callable[[Context], Outcome]:
    def feature(ctx: Context) -> Outcome:
        return run(ctx, ["examples", ctx.model, "--quiet", *ctx.layer_args(), "--units", "0-1",
                         "--images", str(ctx.images), "--engine", engine, "--top", "2",
                         "--bottom", "2", "--out", ctx.out(f"examples_{engine}")])  # fmt: skip

    return feature


def _simple(build: Callable[[Context], list[str]]) -> Callable[[Context], Outcome]:
    return lambda ctx: run(ctx, build(ctx))


def _term(ctx: Context, unit: int) -> str:
    return f"{ctx.layer}:{min(unit, max(ctx.channels - 1, 0))}"


#: feature name -> what it runs.  The matrix is this dict.
FEATURES: dict[str, Callable[[Context], Outcome]] = {
    "unit": _simple(lambda c: c.unit("--out", c.out("unit"))),
    "diversity": _simple(lambda c: c.unit("--diversity", "2", "--out", c.out("diversity"))),
    "negative": _simple(lambda c: c.unit("--negative", "--out", c.out("negative"))),
    "neuron": _simple(
        lambda c: c.unit(
            "--objective",
            "neuron",
            *(["--position", c.position] if c.position else []),
            "--out",
            c.out("neuron"),
        )  # fmt: skip
    ),
    "deepdream": _simple(lambda c: c.unit("--objective", "deepdream", "--out", c.out("dream"))),
    "logit": _simple(
        lambda c: c.render("--objective", "logit", "--units", "0", "--out", c.out("logit"))
    ),
    "prob": _simple(
        lambda c: c.render("--objective", "prob", "--units", "0", "--out", c.out("prob"))
    ),
    "combination": _simple(
        lambda c: c.render(
            "--objective", f"{_term(c, 0)} + 0.5*{_term(c, 1)}", "--out", c.out("combination")
        )  # fmt: skip
    ),
    "interpolate": _simple(
        lambda c: c.render(
            "--interpolate",
            _term(c, 0),
            _term(c, 1),
            "--frames",
            "2",
            "--out",
            c.out("interpolate"),
        )  # fmt: skip
    ),
    "direction": _simple(
        lambda c: c.render(*c.layer_args(), "--direction", "random", "--out", c.out("direction"))
    ),
    "spectrum": _simple(lambda c: c.unit("--spectrum", "--out", c.out("spectrum"))),
    "steepest": _simple(lambda c: c.unit("--steepest", "--out", c.out("steepest"))),
    "maco": _simple(lambda c: c.unit("--param", "maco", "--out", c.out("maco"))),
    "octaves": _simple(lambda c: c.unit("--octaves", "2", "--out", c.out("octaves"))),
    "prior": _simple(
        lambda c: c.unit("--param", "prior", "--prior", str(c.generator), "--out", c.out("prior"))
    ),
    "examples_onnxruntime": _examples("onnxruntime"),
    "examples_torch": _examples("torch"),
    "cluster_facets": _simple(
        lambda c: c.unit(
            "--diversity",
            "2",
            "--cluster-facets",
            "--images",
            str(c.images),
            "--top",
            "4",
            "--out",
            c.out("facets"),
        )  # fmt: skip
    ),
    "from": _from,
    "atlas": _simple(lambda c: [*_atlas_args(c, c.out("atlas")), "--quiet"]),
    "atlas_resume": _atlas_resume,
    "atlas_shards": _atlas_shards,
}


# -- what every model's run needs --------------------------------------------------------------
def image_folder(folder: Path, n: int = 12, size: int = 48) -> Path:
    """``n`` generated pattern images (PNG) for the dataset-example features."""
    import numpy as np
    from PIL import Image

    from fvdesk.core.patterns import generate

    folder.mkdir(parents=True, exist_ok=True)
    images, _ = generate(n, size, seed=3)
    for i, chw in enumerate(images):
        hwc = (chw.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(hwc).save(folder / f"img{i:02d}.png")
    return folder


def generator_onnx(path: Path, latent: int = 16, size: int = 32) -> Path:
    """A learned prior's stand-in: latent (N, latent) -> Gemm -> Reshape -> Tanh, an image
    (N, 3, size, size) in [-1, 1] with random weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((latent, 3 * size * size)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["z", "w"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["img"]),
        helper.make_node("Tanh", ["img"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "generator",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", latent])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3, size, size])],
        [numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array([-1, 3, size, size], np.int64), "shape")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def pick_layers(ctx: Context) -> Outcome:
    """A mid feature layer (and its grid centre) from ``fvdesk layers --json``."""
    rc, out, err = call(["layers", ctx.model, "--json"], ctx.logs)
    got = judge(rc, out, err)
    if got.status != OK:
        return got
    layers = [x for x in json.loads(out) if x.get("available", True) and x.get("channels")]
    pool = [x for x in layers if x["kind"] == "feature" and (x["channels"] or 0) > 1] or layers
    if pool:
        mid = pool[(len(pool) - 1) // 2]
        ctx.layer, ctx.channels = mid["name"], int(mid["channels"])
        shape = mid.get("shape") or []
        if mid["kind"] == "feature" and len(shape) == 4 and all(shape[2:]):
            ctx.position = _centre(ctx, shape[2], shape[3])
    return got


def _centre(ctx: Context, height: int, width: int) -> str:
    """The grid's centre at the render's canvas: a size-agnostic model's grid shrinks with --size,
    so the centre listed at the native size may be off the grid of a smaller render."""
    rc, out, _ = call(["info", ctx.model, "--json", "--no-parity"], ctx.logs)
    sy = sx = 1.0
    if rc == 0:
        spec = json.loads(out).get("input") or {}
        if spec.get("height") and spec.get("width") and not spec.get("fixed_size", True):
            sy, sx = ctx.size / spec["height"], ctx.size / spec["width"]
    return f"{int(width * sx) // 2},{int(height * sy) // 2}"


def shared_inputs(work: Path) -> tuple[Path, Path]:
    """The image folder and the generator every model's run uses (made once per work folder)."""
    images = work / "images"
    if not images.is_dir():
        image_folder(images)
    gen = work / "generator.onnx"
    if not gen.exists():
        generator_onnx(gen)
    return images, gen


def feature_context(model: str | os.PathLike, work: Path, steps: int, size: int) -> Context:
    """A model's context with its layers picked; ``ctx.listed`` says how the listing went."""
    images, gen = shared_inputs(work)
    folder = work / re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model).stem)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(str(model), folder, steps, size, images, gen)
    ctx.listed = pick_layers(ctx)
    return ctx


def run_feature(ctx: Context, name: str) -> Outcome:
    """One feature; a model whose layer listing failed or was refused (it does not load) gets
    that outcome in every cell, since the features that need a layer could not be given one."""
    return ctx.listed if ctx.listed.status != OK else FEATURES[name](ctx)


def try_model(
    model: str | os.PathLike,
    work: Path,
    *,
    steps: int = 4,
    size: int = 32,
    only: Sequence[str] | None = None,
) -> dict[str, Outcome]:
    """Every feature (or ``only`` those) on one model: feature -> outcome."""
    ctx = feature_context(model, work, steps, size)
    return {name: run_feature(ctx, name) for name in only or FEATURES}


def _table(results: dict[str, dict[str, Outcome]]) -> str:
    names = list(results)
    features = list(next(iter(results.values())))
    width = max(len(f) for f in features)
    rows = [" " * width + "  " + "  ".join(Path(n).stem for n in names)]
    for f in features:
        cells = []
        for n in names:
            o = results[n][f]
            cells.append((o.status if o.status != REFUSED else "refused").ljust(len(Path(n).stem)))
        rows.append(f.ljust(width) + "  " + "  ".join(cells))
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="MODEL.onnx")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--only", help="comma list of features: " + ",".join(FEATURES))
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--work", help="work folder (default: a temporary one, deleted afterwards)")
    p.add_argument("--log", help="write every command and its output to this file")
    args = p.parse_args(argv)
    only = [f.strip() for f in args.only.split(",")] if args.only else None
    unknown = [f for f in only or () if f not in FEATURES]
    if unknown:
        p.error(f"unknown features {unknown}; known: {', '.join(FEATURES)}")
    with tempfile.TemporaryDirectory(prefix="fvdesk_try_") as tmp:
        work = Path(args.work or tmp)
        os.environ.setdefault("FVDESK_CACHE_DIR", str(work / "cache"))
        results: dict[str, dict[str, Outcome]] = {}
        logs: list[str] = []
        for model in args.models:
            if not args.json:
                print(f"== {model}", flush=True)
            ctx = feature_context(model, work, args.steps, args.size)
            results[model] = {}
            for name in only or FEATURES:
                o = run_feature(ctx, name)
                results[model][name] = o
                if not args.json:
                    print(f"{name:22s} {o}", flush=True)
            logs.extend(ctx.logs)
        if args.log:
            Path(args.log).write_text("\n".join(logs), encoding="utf-8")
    if args.json:
        out = {m: {f: {"status": o.status, "message": o.message} for f, o in r.items()}
               for m, r in results.items()}  # fmt: skip
        print(json.dumps(out, indent=2))
    elif len(results) > 1:
        print()
        print(_table(results))
    return int(any(o.status == FAIL for r in results.values() for o in r.values()))


if __name__ == "__main__":
    sys.exit(main())
