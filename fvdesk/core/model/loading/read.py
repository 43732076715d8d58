"""Reading: the file in chunks (sha256 on the way), parsed, its declared sizes and names vetted,
and weights kept in external files read after checking every declaration."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import onnx

from fvdesk.core.errors import ModelLoadError, UnsupportedModelError
from fvdesk.core.model import vet
from fvdesk.core.model.loading.context import LoadContext, cause

_CHUNK = 4 << 20


def read_model(ctx: LoadContext) -> tuple[Any, str]:
    """The parsed, vetted ``ModelProto`` with its external data loaded, and the file's sha256."""
    ctx.phase = "reading the file"
    ctx.report(0.0, f"Reading {ctx.path.name}")
    data, sha = read_bytes(ctx)
    ctx.phase = "parsing the ONNX file"
    model = parse(ctx, data)
    del data
    vet.check_declared_sizes(model, str(ctx.path))
    load_external_data(ctx, model)
    return model, sha


def read_bytes(ctx: LoadContext) -> tuple[bytes, str]:
    p = ctx.path
    if not p.exists():
        raise ModelLoadError(f"{p} does not exist.")
    if p.is_dir():
        raise ModelLoadError(f"{p} is a folder, not an ONNX model file.")
    try:
        size = p.stat().st_size
        if size == 0:
            raise ModelLoadError(f"{p} is empty (0 bytes), so it is not an ONNX model.")
        h = hashlib.sha256()
        buf = bytearray(size)
        view = memoryview(buf)
        done = 0
        with open(p, "rb") as fh:
            while done < size:
                n = fh.readinto(view[done : done + _CHUNK])
                if not n:
                    break
                h.update(view[done : done + n])
                done += n
                ctx.report(
                    0.15 * done / size, f"Reading {p.name} ({done >> 20} of {size >> 20} MB)"
                )
        view.release()
    except PermissionError:
        raise ModelLoadError(f"{p} cannot be read (permission denied).") from None
    except OSError as e:
        raise ModelLoadError(f"{p} cannot be read ({e.strerror or e}).") from None
    return bytes(buf[:done]), h.hexdigest()


def parse(ctx: LoadContext, data: bytes) -> Any:
    from google.protobuf.message import DecodeError

    p = ctx.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelLoadError(
            f"{p} is not a valid ONNX file (it is truncated, corrupt or another format)."
        ) from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(
            f"{p} is not an ONNX model (no graph or opset inside; is it another format?)."
        )
    g = model.graph
    if not g.node:
        raise UnsupportedModelError(
            f"{p} has an empty graph (no nodes), so there is nothing to visualize."
        )
    if not g.output:
        raise ModelLoadError(f"{p} is corrupt or truncated: its graph declares no outputs.")
    vet.check_text(model, str(p))
    vet.check_opsets(model, str(p))
    return model


def load_external_data(ctx: LoadContext, model: Any) -> None:
    """Read weights kept in external files, after checking every declaration: the location
    stays inside the model's folder (symlinks resolved), names a regular file, and the
    declared offset and length are numbers that fit that file and the tensor's size."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    folder = ctx.path.parent.resolve()
    plans: list[tuple[Any, Path, int, int]] = []
    for t in _get_all_tensors(model):
        if not uses_external_data(t):
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        try:
            target = (folder / loc).resolve()
            inside = bool(loc) and not Path(loc).is_absolute() and target.is_relative_to(folder)
        except (ValueError, OSError):  # NUL bytes, loops of symlinks
            inside = False
        if not inside:
            raise ModelLoadError(
                f"{ctx.path} refers to external data at {loc!r}, outside the model's folder; "
                "fvdesk refuses to read it."
            )
        if not target.exists():
            raise ModelLoadError(
                f"{ctx.path} keeps its weights in external data file(s) {loc!r} that are missing from {folder}."
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{ctx.path} refers to external data {loc!r}, which is not a regular file."
            )
        plans.append((t, target, *external_range(ctx, t, info, target)))
    if not plans:
        return
    ctx.phase = "reading external data"
    ctx.report(0.15, "Reading external weights")
    try:
        for t, target, offset, length in plans:
            with open(target, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
            if len(data) != length:
                raise OSError(f"{target.name} ended early")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    except OSError as e:
        raise ModelLoadError(f"{ctx.path} has unreadable external data ({cause(e)}).") from None


def external_range(ctx: LoadContext, t: Any, info: dict[str, str], target: Path) -> tuple[int, int]:
    """(offset, length) of an external tensor, checked against the file and the tensor."""
    size = target.stat().st_size
    try:
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") else size - offset
    except ValueError:
        raise ModelLoadError(
            f"{ctx.path} is corrupt: the external data of {t.name!r} has a non-numeric offset or length."
        ) from None
    want = vet.tensor_bytes(t)
    if offset < 0 or length < 0 or offset + length > size or (want is not None and length != want):
        raise ModelLoadError(
            f"{ctx.path} is corrupt: the external data of {t.name!r} (offset {offset}, "
            f"length {length}) does not fit {target.name} ({size} bytes) and the tensor's "
            f"{want if want is not None else '?'} bytes."
        )
    return offset, length
