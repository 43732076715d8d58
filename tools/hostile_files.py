"""Hostile-file campaign for the model loader: seeded mutations of ONNX files, each opened alone.

    python tools/hostile_files.py --count 10000 --seed 0 --workers 2 --json campaign.json

Every file is generated from a seed (``--seed`` and its number), so a finding is reproduced with
``--only N --keep DIR``.  Mutations: truncation, bit flips, byte runs, protobuf length prefixes
set to absurd or slightly wrong values, absurd declared dims (weights, image input, constant
shapes that ``ConstantOfShape``/``Expand``/``Tile``/``Resize`` would allocate), cyclic graphs,
external-data paths that escape the folder (relative, absolute, through a symlink) or declare
impossible offsets, dangling references, wrong attribute types, odd opsets, hostile metadata and
sidecars, zero-byte files and files that are not ONNX at all.

Outcomes per file: ``loaded``; ``refused`` (one ``FvdeskError`` sentence naming the file);
``unclear`` (an ``FvdeskError`` that is not one sentence naming the file); ``wrapped`` (a
refusal through the loader's last-resort wrapper, "could not be loaded while ...": a sentence,
but one that passes an internal error on, so each is worth a look); ``traceback`` (another
exception escaped ``load_model``); ``crash`` (the process died by a signal); ``hang`` (no
answer within ``--timeout``); and, across outcomes, ``memory`` (peak RSS above ``--memory-mb``
more than the parent's: declared sizes should be refused before allocating).

Isolation without paying a fresh interpreter per file.  Starting Python and importing torch,
onnx, onnxruntime and onnx2torch costs 2-8 s, so 10,000 fresh processes would take many hours on
two cores.  Instead the parent imports everything once, loads one small model to warm lazy
imports and caches, and then forks one child per file (copy-on-write: tens of milliseconds).  The
parent sets torch to one thread before anything runs and keeps no onnxruntime session alive, so
no thread pool is copied into a child in a locked state (checked: the parent runs no Python thread
when it forks; its only other native thread is one onnxruntime parks at import).  Each child lowers its address-space limit, opens its file, sends one JSON line over a
pipe and ends with ``os._exit``.  The parent reaps it with ``wait4`` (exit status and peak RSS):
a signal is a crash, no verdict within the time limit kills the child's process group and counts
a hang.  Every file gets a new child, so a crash, a hang or a corrupted heap in one file cannot
touch another file's result, which is what one-subprocess-per-file buys, at a small part of the
cost.  POSIX only (fork).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTCOMES = ("loaded", "refused", "unclear", "wrapped", "traceback", "crash", "hang")
WRAPPER = "could not be loaded while"


# ------------------------------------------------------------------------------------------------
# Base models (small, so a file that survives its mutation loads in a fraction of a second)
# ------------------------------------------------------------------------------------------------
def _tiny_conv(opset: int = 17) -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("wf", 5, 8), w("bf", 5)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model.metadata_props.add(key="fvdesk.preprocessing", value="unit")
    return model


def _tiny_new_ops() -> Any:
    """Opset-18 forms that need rewriting (Pad with axes, Split num_outputs, Reduce axes input,
    Resize with axes) plus a ConstantOfShape/Expand chain that folding evaluates."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    model = _tiny_conv(18)
    g = model.graph
    i64 = np.int64
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([1, 1, 1, 1], i64), "pads"),
            numpy_helper.from_array(np.array([2, 3], i64), "pad_axes"),
            numpy_helper.from_array(np.array([2, 3], i64), "red_axes"),
            numpy_helper.from_array(np.array([1.0, 1.0], np.float32), "scales"),
            numpy_helper.from_array(np.array([1, 8, 1, 1], i64), "bias_shape"),
        ]
    )
    extra = [
        helper.make_node("Pad", ["r2", "pads", "", "pad_axes"], ["pd"], name="pad"),
        helper.make_node("Split", ["pd"], ["s1", "s2"], name="split", axis=1, num_outputs=2),
        helper.make_node("Concat", ["s1", "s2"], ["cc"], name="concat", axis=1),
        helper.make_node("ConstantOfShape", ["bias_shape"], ["cb"], name="const_bias"),
        helper.make_node("Add", ["cc", "cb"], ["ad"], name="add"),
        helper.make_node("Resize", ["ad", "", "scales"], ["rs"], name="resize", axes=[2, 3]),
        helper.make_node("ReduceMean", ["rs", "red_axes"], ["g"], name="mean", keepdims=1),
    ]
    nodes = [n for n in g.node if n.name != "gap"]
    at = next(i for i, n in enumerate(nodes) if n.name == "flatten")
    del g.node[:]
    g.node.extend(nodes[:at] + extra + nodes[at:])
    del g.value_info[:]
    g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return model


def base_models(demo: Path | None = None) -> dict[str, bytes]:
    """Serialized base models the mutations start from."""
    import onnx  # noqa: F401

    bases = {
        "tiny": _tiny_conv().SerializeToString(),
        "new_ops": _tiny_new_ops().SerializeToString(),
    }
    if demo is None:
        from fvdesk.core.resources import demo_model_path

        demo = demo_model_path()
    bases["demo"] = Path(demo).read_bytes()
    return bases


# ------------------------------------------------------------------------------------------------
# Mutations
# ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One generated file: the model's bytes plus files to put beside it."""

    kind: str
    data: bytes
    extra: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes, beside the model
    links: dict[str, str] = field(default_factory=dict)  # link name -> target (symlinks)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while i < len(buf):
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            break
    raise ValueError("bad varint")


def length_prefixes(buf: bytes, depth: int = 3) -> list[tuple[int, int, int]]:
    """(offset of the length varint, its byte size, the length) of length-delimited fields, in
    the top ``depth`` levels of nested messages (parsed leniently: fields that do not parse as
    messages are not descended into)."""
    found: list[tuple[int, int, int]] = []

    def walk(start: int, end: int, level: int) -> bool:
        i = start
        while i < end:
            try:
                key, j = _read_varint(buf, i)
            except ValueError:
                return False
            wire = key & 7
            if key >> 3 == 0:
                return False
            if wire == 0:
                try:
                    _, i = _read_varint(buf, j)
                except ValueError:
                    return False
            elif wire == 1:
                i = j + 8
            elif wire == 5:
                i = j + 4
            elif wire == 2:
                try:
                    n, k = _read_varint(buf, j)
                except ValueError:
                    return False
                if k + n > end:
                    return False
                found.append((j, k - j, n))
                if level + 1 < depth and n > 1:
                    mark = len(found)
                    if not walk(k, k + n, level + 1):
                        del found[mark:]
                i = k + n
            else:
                return False
        return i == end

    walk(0, len(buf), 0)
    return found


def _model(data: bytes) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.ParseFromString(data)
    return m


def _m_truncate(rng: random.Random, data: bytes) -> Case:
    return Case("truncated", data[: rng.randrange(1, len(data))])


def _m_bitflip(rng: random.Random, data: bytes) -> Case:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        i = rng.randrange(len(buf) * 8)
        buf[i // 8] ^= 1 << (i % 8)
    return Case("bit-flipped", bytes(buf))


def _m_bytes(rng: random.Random, data: bytes) -> Case:
    buf = bytearray(data)
    i = rng.randrange(len(buf))
    n = rng.choice((1, 4, 16, 256))
    fill = rng.choice((b"\xff", b"\x00", b"\x80", bytes([rng.randrange(256)])))
    buf[i : i + n] = fill * min(n, len(buf) - i)
    return Case("overwritten bytes", bytes(buf))


def _m_length(rng: random.Random, data: bytes) -> Case:
    """A protobuf length prefix set to an absurd or slightly wrong value."""
    spots = length_prefixes(data)
    if not spots:
        return _m_bitflip(rng, data)
    off, size, n = rng.choice(spots)
    new = rng.choice((2**31 - 1, 2**32 + 5, 2**62, n + 1, max(0, n - 1), n * 1000 + 7, 0))
    return Case("absurd protobuf length", data[:off] + _varint(new) + data[off + size :])


def _m_dims(rng: random.Random, data: bytes) -> Case:
    """Absurd declared sizes: weights, the image input, constants that would be allocated."""
    import numpy as np
    from onnx import helper, numpy_helper

    m = _model(data)
    g = m.graph
    huge = rng.choice((2**31, 2**40, 10**12, 2**62, -1, -(2**40), 0, 1 << 20))
    choice = rng.randrange(7)
    if choice == 0 and g.initializer:
        t = rng.choice(list(g.initializer))
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = huge
        kind = "weight with absurd dims"
    elif choice == 1:
        dims = g.input[0].type.tensor_type.shape.dim
        k = rng.randrange(len(dims)) if dims else 0
        if dims:
            dims[k].Clear()
            dims[k].dim_value = huge if huge > 0 else 10**9
        kind = "image input with absurd dims"
    elif choice == 2:
        shape = np.array([1, 8, 2**20, 2**20] if rng.random() < 0.5 else [2**40], np.int64)
        g.initializer.append(numpy_helper.from_array(shape, "hostile_shape"))
        g.node.insert(0, helper.make_node("ConstantOfShape", ["hostile_shape"], ["hostile_c"]))
        g.output.append(helper.make_value_info("hostile_c", g.output[0].type))
        kind = "ConstantOfShape of an absurd shape"
    elif choice == 3:
        reps = np.array([1, 1, 2**18, 2**18], np.int64)
        g.initializer.append(numpy_helper.from_array(reps, "hostile_reps"))
        first = g.node[0].output[0]
        g.node.append(helper.make_node("Tile", [first, "hostile_reps"], ["hostile_t"]))
        g.output.append(helper.make_value_info("hostile_t", g.output[0].type))
        kind = "Tile to an absurd size"
    elif choice == 4:
        scales = np.array([1.0, 1.0, 1e4, 1e4], np.float32)
        g.initializer.append(numpy_helper.from_array(scales, "hostile_scales"))
        g.node.append(
            helper.make_node("Resize", [g.node[0].output[0], "", "hostile_scales"], ["hostile_r"])
        )
        g.output.append(helper.make_value_info("hostile_r", g.output[0].type))
        kind = "Resize by an absurd scale"
    elif choice == 5:
        shape = np.array([2**16, 2**16, 2**10], np.int64)
        g.initializer.append(numpy_helper.from_array(shape, "hostile_eshape"))
        g.node.append(
            helper.make_node("Expand", [g.node[0].output[0], "hostile_eshape"], ["hostile_e"])
        )
        g.output.append(helper.make_value_info("hostile_e", g.output[0].type))
        kind = "Expand to an absurd shape"
    else:
        t = rng.choice(list(g.initializer)) if g.initializer else None
        if t is not None:
            t.raw_data = t.raw_data[: rng.randrange(0, max(1, len(t.raw_data)))]
        kind = "weight with missing data"
    return Case(kind, m.SerializeToString())


def _m_cycle(rng: random.Random, data: bytes) -> Case:
    m = _model(data)
    nodes = m.graph.node
    if len(nodes) >= 2:
        a = rng.randrange(len(nodes) - 1)
        b = rng.randrange(a + 1, len(nodes))
        if nodes[a].input:
            nodes[a].input[0] = nodes[b].output[0]
        else:
            nodes[a].input.append(nodes[b].output[0])
    return Case("cyclic graph", m.SerializeToString())


def _m_structure(rng: random.Random, data: bytes) -> Case:
    """Dangling references, duplicated names, unknown ops, wrong attribute types, odd opsets."""
    from onnx import helper

    m = _model(data)
    g = m.graph
    n = rng.choice(list(g.node)) if g.node else None
    choice = rng.randrange(10)
    if choice == 0 and n is not None:
        n.input.append("nowhere")
    elif choice == 1 and n is not None:
        n.op_type = rng.choice(("", "NoSuchOp", "Conv" * 50, "LSTM", "If", "\x00"))
    elif choice == 2 and n is not None:
        del n.attribute[:]
        n.attribute.append(helper.make_attribute("kernel_shape", "three"))
        n.attribute.append(helper.make_attribute("pads", [10**9] * 4))
    elif choice == 3:
        for x in g.node:
            x.name = "same"
    elif choice == 4:
        m.opset_import[0].version = rng.choice((0, 1, 5, 10_000, -3, 2**40))
    elif choice == 5:
        m.ir_version = rng.choice((0, 1, 2, 3, 99, 2**40))
    elif choice == 6:
        del g.output[:]
    elif choice == 7 and n is not None:
        n.domain = rng.choice(("com.hostile", "ai.onnx.ml", "ai.onnx.preview.training"))
    elif choice == 8:
        g.input[0].type.tensor_type.elem_type = rng.choice((0, 8, 9, 10, 11, 16, 99))
    elif n is not None:
        n.output[0] = g.input[0].name  # a node overwriting the image input
    return Case("broken structure", m.SerializeToString())


def _m_metadata(rng: random.Random, data: bytes) -> Case:
    m = _model(data)
    key = rng.choice(
        ("fvdesk.preprocessing", "fvdesk.input_size", "fvdesk.labels", "names", "imgsz", "labels")
    )
    value = rng.choice(
        (
            "[" * 10_000,
            "{" + "0: 'a', " * 50_000 + "}",
            '{"range": [0, 1e999]}',
            "[1e9, 1]",
            "nan",
            "\x00\xff",
            "[[[[[[[[[[]]]]]]]]]]",
            json.dumps({"mean": [1, 2, 3], "std": [0, 0, 0]}),
            "x" * 2_000_000,
        )
    )
    del m.metadata_props[:]
    m.metadata_props.add(key=key, value=value)
    return Case("hostile metadata", m.SerializeToString())


def _m_sidecar(rng: random.Random, data: bytes) -> Case:
    side = rng.choice(
        (
            b"{not json",
            b"[" * 100_000,
            json.dumps({"labels": "/etc/passwd"}).encode(),
            json.dumps({"labels": "../../../../etc/shadow"}).encode(),
            json.dumps({"input_name": "x" * 100_000}).encode(),
            json.dumps({"preprocessing": {"range": [1, 1]}}).encode(),
            b"\xff\xfe\x00",
        )
    )
    return Case("hostile sidecar", data, extra={"model.fvdesk.json": side})


def _m_external(rng: random.Random, data: bytes) -> Case:
    """Weights in external data, with a location or range that must be refused."""
    from onnx import TensorProto

    m = _model(data)
    chunks: list[bytes] = []
    offset = 0
    for t in m.graph.initializer:
        if not t.HasField("raw_data"):
            continue
        raw = t.raw_data
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", "w.bin"), ("offset", str(offset)), ("length", str(len(raw)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        chunks.append(raw)
        offset += len(raw)
    external = [t for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return _m_bitflip(rng, data)
    extra = {"w.bin": b"".join(chunks)}
    links: dict[str, str] = {}
    t = rng.choice(external)
    info = {e.key: e for e in t.external_data}
    choice = rng.randrange(9)
    if choice == 0:
        info["location"].value = "../outside.bin"
    elif choice == 1:
        info["location"].value = "/etc/passwd"
    elif choice == 2:
        info["location"].value = "link.bin"
        links["link.bin"] = "/etc/passwd"
    elif choice == 3:
        info["location"].value = "link.bin"
        links["link.bin"] = "../outside.bin"
    elif choice == 4:
        info["offset"].value = rng.choice((str(2**62), "-5", "abc", str(offset)))
    elif choice == 5:
        info["length"].value = rng.choice((str(2**50), str(2**31), "-1", "0"))
    elif choice == 6:
        info["location"].value = rng.choice(
            ("", ".", "sub/../../x.bin", "w.bin\x00.txt", "/dev/zero")
        )
    elif choice == 7:
        extra = {}  # the weights file is missing
    else:
        extra["w.bin"] = extra["w.bin"][: len(extra["w.bin"]) // 2]  # a truncated weights file
    return Case("external data escaping or impossible", m.SerializeToString(), extra, links)


def _m_not_onnx(rng: random.Random, data: bytes) -> Case:
    import onnx

    choice = rng.randrange(7)
    if choice == 0:
        return Case("zero bytes", b"")
    if choice == 1:
        return Case("random bytes", rng.randbytes(rng.choice((1, 10, 1000, 100_000))))
    if choice == 2:
        return Case("PNG", b"\x89PNG\r\n\x1a\n" + rng.randbytes(500))
    if choice == 3:
        return Case("text", b"this is not a model\n" * 100)
    if choice == 4:
        return Case("ZIP", b"PK\x03\x04" + rng.randbytes(300))
    if choice == 5:
        t = onnx.numpy_helper.from_array(__import__("numpy").zeros((4, 4), "float32"), "t")
        return Case("a TensorProto, not a model", t.SerializeToString())
    return Case("nested empty messages", b"\x3a\x00" * 1000 + struct.pack("<I", 7))


MUTATIONS: list[tuple[Callable[[random.Random, bytes], Case], float]] = [
    (_m_truncate, 2.0),
    (_m_bitflip, 3.0),
    (_m_bytes, 1.5),
    (_m_length, 2.0),
    (_m_dims, 2.0),
    (_m_cycle, 0.7),
    (_m_structure, 2.0),
    (_m_metadata, 0.8),
    (_m_sidecar, 0.5),
    (_m_external, 1.2),
    (_m_not_onnx, 0.8),
]


def make_case(seed: int, number: int, bases: dict[str, bytes]) -> Case:
    """The ``number``-th file of campaign ``seed`` (deterministic)."""
    rng = random.Random(f"{seed}:{number}")
    name = rng.choice(sorted(bases))
    fns, weights = zip(*MUTATIONS, strict=True)
    fn = rng.choices(fns, weights=weights)[0]
    try:
        case = fn(rng, bases[name])
    except Exception:  # noqa: BLE001 - a mutation that cannot apply falls back to bit flips
        case = _m_bitflip(rng, bases[name])
    case.kind = f"{case.kind} ({name})"
    return case


def write_case(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(case.data)
    for name, data in case.extra.items():
        (folder / name).write_bytes(data)
    (folder.parent / "outside.bin").write_bytes(b"\x00" * 4096)
    for name, target in case.links.items():
        with contextlib.suppress(FileExistsError):
            (folder / name).symlink_to(target)
    return path


# ------------------------------------------------------------------------------------------------
# Running files in forked children
# ------------------------------------------------------------------------------------------------
@dataclass
class Result:
    number: int
    kind: str
    outcome: str
    message: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0


def classify(message: str, path: Path) -> str:
    """``refused``, ``wrapped`` or ``unclear`` for an ``FvdeskError`` message."""
    one = "\n" not in message and message.endswith(".") and "Traceback" not in message
    names = str(path) in message or path.name in message or str(path.parent) in message
    if not (one and names):
        return "unclear"
    return "wrapped" if WRAPPER in message else "refused"


#: Canaries: children that misbehave on purpose, run first when asked, so every report shows
#: that the harness sees each kind of failure (they are kept out of the counts).
CANARIES = {-4: "crash", -3: "hang", -2: "traceback", -1: "unclear"}
_CANARY_TIMEOUT = 2.0


def _canary(kind: str) -> None:
    from fvdesk.core.errors import ModelLoadError

    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "hang":
        time.sleep(3600)
    if kind == "traceback":
        raise KeyError("a raw exception")
    raise ModelLoadError("two lines\nand no file name")


def _child(path: Path, write_fd: int, address_limit: int, canary: str | None = None) -> None:
    """In the forked child: open the file, report, leave without cleanup."""
    try:
        os.setpgid(0, 0)
        if address_limit:
            resource.setrlimit(resource.RLIMIT_AS, (address_limit, address_limit))
        from fvdesk.core.errors import FvdeskError
        from fvdesk.core.model.loader import load_model

        t0 = time.perf_counter()
        try:
            if canary is not None:
                _canary(canary)
            load_model(path, device="cpu")
            verdict = {"outcome": "loaded", "message": ""}
        except FvdeskError as e:
            verdict = {"outcome": classify(str(e), path), "message": str(e)}
        except BaseException as e:  # noqa: BLE001 - exactly what this campaign counts
            verdict = {"outcome": "traceback", "message": f"{type(e).__name__}: {e}"[:2000]}
        verdict["seconds"] = round(time.perf_counter() - t0, 3)
        os.write(write_fd, (json.dumps(verdict) + "\n").encode())
    finally:
        os._exit(0)


@dataclass
class _Running:
    number: int
    kind: str
    pid: int
    fd: int
    folder: Path
    start: float
    buf: bytes = b""


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def prepare_parent(warm: Path | None = None) -> None:
    """Import everything and warm lazy imports once, leaving no extra thread behind."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    try:  # where tqdm is installed, a library's progress bar would start its monitor thread
        import tqdm

        tqdm.tqdm.monitor_interval = 0
    except ImportError:
        pass
    from fvdesk.core.model.loader import load_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warm.onnx"
        path.write_bytes(base_models(warm)["tiny"])
        load_model(path)
    import gc

    gc.collect()
    if threading.active_count() != 1:
        raise RuntimeError("the parent runs Python threads; forking it would not be safe")


def threads() -> int:
    """Native threads of this process (Linux), including those no Python code started."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def run_campaign(
    count: int,
    *,
    seed: int = 0,
    workers: int = 2,
    timeout: float = 30.0,
    memory_mb: int = 1024,
    keep: Path | None = None,
    only: list[int] | None = None,
    progress: Callable[[int, Counter], None] | None = None,
    canaries: bool = False,
    bases: list[str] | None = None,
) -> tuple[Counter, list[Result]]:
    """Generate and open ``count`` files (or the numbers in ``only``); returns (outcome counts,
    per-file results).  ``canaries`` first runs the ``CANARIES`` (negative numbers in the
    results, not in the counts)."""
    prepare_parent()
    models = base_models()
    if bases:
        models = {k: v for k, v in models.items() if k in bases}
    numbers = only if only is not None else list(range(count))
    if canaries:
        numbers = sorted(CANARIES) + numbers
    work = Path(tempfile.mkdtemp(prefix="fvdesk-hostile-")) if keep is None else Path(keep)
    work.mkdir(parents=True, exist_ok=True)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    limit = _vm_size() + (6 << 30)
    counts: Counter = Counter()
    results: list[Result] = []
    running: dict[int, _Running] = {}
    todo = iter(numbers)
    done = 0
    try:
        while True:
            while len(running) < workers:
                number = next(todo, None)
                if number is None:
                    break
                canary = CANARIES.get(number)
                case = Case(f"canary: {canary}", b"") if canary else make_case(seed, number, models)
                folder = work / (f"{number:06d}" if number >= 0 else f"canary{-number}")
                path = write_case(case, folder)
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    _child(path, w, limit, canary)
                os.close(w)
                with contextlib.suppress(OSError):
                    os.setpgid(pid, pid)  # also here: the child may not have run yet
                running[r] = _Running(number, case.kind, pid, r, folder, time.monotonic())
            if not running:
                break
            ready, _, _ = select.select(list(running), [], [], 0.2)
            now = time.monotonic()
            for fd in list(running):
                job = running[fd]
                finished = False
                if fd in ready:
                    chunk = os.read(fd, 65536)
                    job.buf += chunk
                    finished = not chunk
                limit_s = timeout if job.number >= 0 else _CANARY_TIMEOUT
                if not finished and now - job.start <= limit_s:
                    continue
                hung = not finished
                if hung:
                    _kill(job.pid)
                _, status, usage = os.wait4(job.pid, 0)
                os.close(fd)
                del running[fd]
                res = _verdict(job, status, usage, hung, now)
                results.append(res)
                if job.number < 0:
                    continue
                if res.peak_mb > baseline + memory_mb:
                    counts["memory"] += 1
                counts[res.outcome] += 1
                if keep is None:
                    shutil.rmtree(job.folder, ignore_errors=True)
                done += 1
                if progress is not None:
                    progress(done, counts)
    finally:
        for job in running.values():
            _kill(job.pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(job.pid, 0)
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    results.sort(key=lambda r: r.number)
    return counts, results


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def _verdict(job: _Running, status: int, usage: Any, hung: bool, now: float) -> Result:
    peak = usage.ru_maxrss / 1024
    if hung:
        return Result(job.number, job.kind, "hang", "", round(now - job.start, 2), peak)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        return Result(job.number, job.kind, "crash", sig, round(now - job.start, 2), peak)
    line = job.buf.decode(errors="replace").strip().splitlines()
    if not line:
        return Result(
            job.number, job.kind, "crash", f"exit status {os.WEXITSTATUS(status)}, no verdict"
        )
    v = json.loads(line[0])
    return Result(job.number, job.kind, v["outcome"], v["message"], v["seconds"], peak)


def _examples(results: list[Result], per: int = 5) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r.outcome in ("loaded", "refused"):
            continue
        lst = out.setdefault(r.outcome, [])
        if len(lst) < per:
            lst.append({"number": r.number, "kind": r.kind, "message": r.message[:400]})
    return out


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """onnxruntime and onnx print C++ diagnostics on fd 2 from the children; keep them out."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per file")
    p.add_argument("--memory-mb", type=int, default=1024, help="peak RSS above the parent's")
    p.add_argument("--only", type=int, nargs="+", help="just these file numbers")
    p.add_argument("--keep", type=Path, help="keep the generated files in this folder")
    p.add_argument("--json", type=Path, help="write counts, timing and examples here")
    p.add_argument("--bases", help="comma-separated base models (tiny,new_ops,demo; default all)")
    p.add_argument(
        "--canaries",
        action="store_true",
        help="first run four children that crash, hang, raise and give an unclear error on "
        "purpose, to show the harness counts each",
    )
    args = p.parse_args(argv)
    t0 = time.monotonic()
    # Single-threaded math libraries in the forking parent (before numpy and torch load): a pool
    # thread busy at fork time could leave a lock held in a child.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    def show(done: int, counts: Counter) -> None:
        if done % 250 == 0 or done == args.count:
            print(f"{done} files: {dict(counts)}", file=sys.stdout, flush=True)

    with _quiet_stderr():
        counts, results = run_campaign(
            args.count,
            seed=args.seed,
            workers=args.workers,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            keep=args.keep,
            only=args.only,
            progress=show,
            canaries=args.canaries,
            bases=args.bases.split(",") if args.bases else None,
        )
    seconds = time.monotonic() - t0
    canary = {CANARIES[r.number]: r.outcome for r in results if r.number < 0}
    results = [r for r in results if r.number >= 0]
    report = {
        "files": len(results),
        "canaries_seen_as": canary,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "counts": {k: counts.get(k, 0) for k in (*OUTCOMES, "memory")},
        "kinds": dict(Counter(r.kind.split(" (")[0] for r in results)),
        "examples": _examples(results),
        "findings": [
            {"number": r.number, "kind": r.kind, "outcome": r.outcome, "message": r.message[:300]}
            for r in results
            if r.outcome not in ("loaded", "refused")
        ][:500],
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    bad = sum(counts.get(k, 0) for k in ("unclear", "traceback", "crash", "hang", "memory"))
    return 1 if bad or any(k != v for k, v in canary.items()) else 0


if __name__ == "__main__":
    sys.exit(main())
