"""What every command needs: the model (with --preprocess/--labels), the device, settings, layers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fvdesk.cli.args import UsageError
from fvdesk.cli.terminal import Progress


def _model_path(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    from fvdesk.core.resources import demo_model_path

    return demo_model_path()


def _device(args: argparse.Namespace, local_rank: int | None = None) -> Any:
    import torch

    from fvdesk.core.device import pick_device

    name = args.device
    try:
        torch.device("cpu" if name == "auto" else name)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"{name!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if name == "auto" and local_rank is not None and torch.cuda.is_available():
        return torch.device(
            "cuda", local_rank % torch.cuda.device_count()
        )  # one GPU per torchrun rank
    return pick_device(name)


def _load(args: argparse.Namespace, *, device: Any = None, progress: Progress | None = None) -> Any:
    from fvdesk.core.errors import AmbiguousInputError
    from fvdesk.core.model.loader import load_model

    path = _model_path(args)
    device = device if device is not None else _device(args)
    bar = progress or Progress(1, enabled=Progress.wanted(args.quiet), label=f"loading {path.name}")

    def report(fraction: float, message: str) -> None:
        bar.update(done=0, label=f"loading {path.name}: {message}"[:70])

    try:
        model = load_model(
            path,
            device=device,
            progress=report if bar.enabled else None,
            input_name=args.input_name,
            preprocessing=args.preprocess,
            check_parity=not args.no_parity,
            input_size=getattr(args, "input_size", None),
        )
    except AmbiguousInputError as e:
        raise UsageError(f"{e} Choose one with --input NAME ({', '.join(e.candidates)}).") from None
    finally:
        if bar.enabled:
            bar._draw("")
            bar.stream.write("\r")
            bar.stream.flush()
    # The user's choices for this run, by the core's one precedence (--preprocess went to the
    # loader); the CLI holds the model alone, so they become its own before any task runs.
    labels = getattr(args, "labels", None)
    if labels is not None:
        model.use(model.choices.with_labels_file(labels))
    if getattr(args, "remember", False):
        _remember(args, model)
    return model


def _remember(args: argparse.Namespace, model: Any) -> None:
    """``--remember``: the user asked for the sidecar to be written (it is never implicit)."""
    size = getattr(args, "input_size", None)
    given = {"preprocessing": args.preprocess is not None,
             "labels": getattr(args, "labels", None) is not None,
             "input_name": getattr(args, "input_name", None) is not None}  # fmt: skip
    if not any(given.values()) and size is None:
        raise UsageError(
            "--remember saves --preprocess, --labels, --input and/or --input-size; give at least one"
        )
    path = model.choices.remember(model.path, **given) if any(given.values()) else None
    if size is not None:  # a load-time choice: the loader reads it from the sidecar
        from fvdesk.core.model.sidecar import save_sidecar

        path = save_sidecar(model.path, input_size=size)
    if not args.quiet:
        print(f"Saved the choice in {path}.", file=sys.stderr)


def _resolve_layer(model: Any, name: str) -> Any:
    from fvdesk.core.errors import RenderError

    graph = model.graph
    if name in graph:
        return graph[name]
    if any(x.name == name for x in graph.unavailable):
        try:
            graph[name]
        except RenderError as e:
            raise UsageError(str(e)) from None
    hint = graph.suggest(name)
    more = f"; did you mean {', '.join(hint)}?" if hint else "; `fvdesk layers` lists them."
    raise UsageError(f"the model {model.name} has no layer named {name!r}{more}")


def _shape_list(shape: Sequence[int | None]) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _shape_text(shape: Sequence[int | None]) -> str:
    from fvdesk.core.model.layers import format_shape

    return format_shape(shape, batch=True, sep="x")


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def render_settings(args: argparse.Namespace, **extra: Any) -> Any:
    """``RenderSettings`` from the engine's defaults, overridden by the flags given (the core's
    ``options.settings_from``, as the app's dock)."""
    from fvdesk.core.optim import options
    from fvdesk.core.optim.settings import recipe

    base = recipe(getattr(args, "recipe", None) or "default", **extra)
    given: dict[str, Any] = {
        o.name: getattr(args, o.name)
        for o in options.OPTIONS
        if getattr(args, o.name, None) is not None
    }
    if getattr(args, "no_transforms", False):
        given["transforms"] = False
    folder = getattr(args, "color_from", None)
    if folder is not None:
        from fvdesk.core.optim.param import color_matrix_from_folder

        base.color_matrix = color_matrix_from_folder(folder)
    if given.get("prior") and "param" not in given:
        given["param"] = "prior"  # --prior FILE: optimize the generator's latent
    return options.settings_from(given, base)


def _settings_or_usage(args: argparse.Namespace, device: Any, model: Any = None) -> Any:
    """The render settings; with ``model``, an explicit ``--size`` the model cannot take is
    refused (naming its size multiple) rather than silently rounded."""
    from fvdesk.core.errors import ConfigError
    from fvdesk.core.optim.settings import size_refusal

    try:
        settings = render_settings(args, device=str(device))
    except (TypeError, ValueError, ConfigError) as e:
        raise UsageError(f"bad render settings: {e}") from None
    if model is not None:
        refusal = size_refusal(settings, model.input, model.name)
        if refusal is not None:
            raise UsageError(f"--size {settings.size}: {refusal}")
    return settings
