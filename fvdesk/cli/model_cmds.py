"""``fvdesk layers`` and ``fvdesk info``: what fvdesk found out about a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fvdesk.cli.args import EXIT_OK
from fvdesk.cli.common import _device, _emit_json, _load, _shape_list, _shape_text


def layer_dict(layer: Any) -> dict[str, Any]:
    """The JSON form of a layer (``fvdesk layers --json``)."""
    d = {
        "name": layer.name,
        "op": layer.op,
        "shape": _shape_list(layer.shape),
        "channels": layer.channels,
        "kind": layer.kind,
        "index": layer.index,
        "describe": layer.describe(),
        "available": layer.available,
    }
    if layer.kind == "tokens":
        d.update(layout=layer.layout, grid=list(layer.grid or ()), extra_tokens=layer.extra_tokens)
    if layer.kind == "attention":
        d["axes"] = list(layer.axes)
    if not layer.available:
        d["reason"] = layer.reason
    return d


def _layer_note(layer: Any, graph: Any) -> str:
    """What the LAYERS table adds after the channel count."""
    if not layer.available:
        return "  (not converted)"
    if layer.name == graph.logits_name:
        return "  (logits)"
    if layer.kind in ("tokens", "attention"):
        return f"  ({layer.describe()})"
    return ""


def cmd_layers(args: argparse.Namespace) -> int:
    model = _load(args)
    graph = model.graph
    if args.json:
        layers = graph.filter(args.filter) if args.filter else list(graph)
        cut = [
            x for x in graph.unavailable if not args.filter or x in graph.filter_all(args.filter)
        ]
        _emit_json([layer_dict(x) for x in [*layers, *cut]])
        return EXIT_OK
    out = sys.stdout
    if args.filter:
        layers = graph.filter_all(args.filter)
        if not layers:
            print(f"No layer of {model.name} matches {args.filter!r}.", file=sys.stderr)
            return EXIT_OK
        rows = [(x.name, x) for x in layers]
    else:
        rows = []

        def walk(node: Any, depth: int) -> None:
            if node.layer is not None:
                rows.append(("  " * depth + node.layer.name, node.layer))
                return
            if depth >= 0 and node.label:
                rows.append(("  " * depth + node.label + "/", None))
            for child in node.children:
                walk(child, depth + 1)

        root = graph.tree
        for child in root.children if root.layer is None else [root]:
            walk(child, 0)
    width = min(max((len(n) for n, _ in rows), default=4) + 2, 80)
    out.write(f"{'LAYER':<{width}}{'OP':<20}{'SHAPE':<20}{'CHANNELS':>8}\n")
    for text, layer in rows:
        if layer is None:
            out.write(f"{text}\n")
        else:
            units = str(layer.channels) if layer.channels else "?"
            shape = _shape_text(layer.shape) if layer.shape else "?"
            out.write(
                f"{text:<{width}}{layer.op:<20}{shape:<20}{units:>8}{_layer_note(layer, graph)}\n"
            )
    kinds = [x.kind for x in graph]
    n_feat = kinds.count("feature")
    parts = [f"{n_feat} feature maps"]
    if kinds.count("tokens"):
        parts.append(f"{kinds.count('tokens')} token layers")
    if kinds.count("attention"):
        parts.append(f"{kinds.count('attention')} attention tensors")
    parts.append(f"{kinds.count('vector')} vectors")
    out.write(f"\n{len(graph)} layers ({', '.join(parts)}) in {model.name}.\n")
    if model.conversion is not None:
        out.write(f"{model.conversion.describe()}\n")
    return EXIT_OK


def conversion_dict(model: Any) -> dict[str, Any]:
    """``fvdesk info``'s account of the conversion: complete, or where it stopped and why."""
    cut = model.conversion
    if cut is None:
        return {"complete": True, "status": "complete"}
    return {
        "complete": False,
        "status": cut.describe(),
        "stopped_at": cut.stopped_at,
        "op": cut.op,
        "reason": cut.reason,
        "nodes_left_out": cut.cut_nodes,
        "nodes": cut.total_nodes,
        "ops_left_out": dict(cut.cut_ops),
        "boundary": list(cut.boundary),
    }


def cmd_info(args: argparse.Namespace) -> int:
    from fvdesk.core.device import describe_device

    device = _device(args)
    model = _load(args, device=device)
    info = info_dict(model, describe_device(device))
    if args.json:
        _emit_json(info)
        return EXIT_OK
    for k, v in _info_lines(model, info):
        print(f"{k + ':':<15}{v}")
    return EXIT_OK


def info_dict(model: Any, device: str) -> dict[str, Any]:
    """The JSON form of ``fvdesk info`` (``device`` as ``describe_device`` words it)."""
    spec = model.input
    graph = model.graph
    return {
        "model": {"file": model.name, "path": str(model.path), "sha256": model.sha256},
        "input": {
            "name": spec.name,
            "layout": spec.layout,
            "channels": spec.channels,
            "height": spec.height,
            "width": spec.width,
            "fixed_size": spec.fixed_size,
            "size_multiple": spec.size_multiple,
            "max_batch": spec.max_batch,
            "dtype": spec.dtype,
        },
        "preprocessing": {
            **model.preprocessing.to_dict(),
            "describe": model.preprocessing.describe(),
        },
        "labels": {
            "source": model.labels_source,
            "count": len(model.labels or []),
            "file": model.labels_file,
        },  # fmt: skip
        "layers": {
            "count": len(graph),
            "feature_maps": sum(1 for x in graph if x.kind == "feature"),
            "token_layers": sum(1 for x in graph if x.kind == "tokens"),
            "attention_tensors": sum(1 for x in graph if x.kind == "attention"),
            "not_converted": len(graph.unavailable),
            "logits": graph.logits_name,
        },
        "conversion": conversion_dict(model),
        "parity": _parity_dict(model.parity),
        "device": device,
        "warnings": list(model.warnings),
    }


def _parity_dict(par: Any) -> dict[str, Any] | None:
    if par is None:
        return None
    return {
        "ok": par.ok,
        "max_abs_diff": par.max_abs_diff,
        "rel_diff": par.rel_diff,
        "feature_rel_diff": par.feature_rel_diff,
        "feature_layer": par.feature_layer,
        "tolerance": par.tolerance,
        "describe": par.describe(),
    }


def _info_lines(model: Any, info: dict[str, Any]) -> list[tuple[str, str]]:
    """The text form of ``fvdesk info``: (key, value) rows, warnings last."""
    spec = model.input
    size = spec.describe_size()
    batch = "any" if spec.max_batch is None else str(spec.max_batch)
    labels = (
        f"{info['labels']['count']} from {model.labels_source}"
        + (f" ({model.labels_file})" if model.labels_file else "")
        if model.labels
        else f"none ({model.labels_source})"
    )
    n_feat = info["layers"]["feature_maps"]
    lines = [
        ("model", f"{model.name}  sha256 {model.sha256[:16]}…"),
        (
            "input",
            f"{spec.name!r} {spec.layout} {spec.channels}ch {size}, batch {batch}, {spec.dtype}",
        ),
        ("preprocessing", model.preprocessing.describe()),
        ("labels", labels),
        (
            "layers",
            f"{len(model.graph)} ({n_feat} feature maps); logits: {model.graph.logits_name or 'not found'}",
        ),
        ("conversion", info["conversion"]["status"]),
        ("parity", model.parity.describe() if model.parity is not None else "not checked"),
        ("device", info["device"]),
    ]
    return lines + [("warning", w) for w in model.warnings]
