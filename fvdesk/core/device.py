"""Device choice, made by the caller at run time (never at import time)."""

from __future__ import annotations

import torch

from fvdesk.core.errors import FvdeskError


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` means CUDA when available, then MPS, then CPU; otherwise the named device."""
    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError:
        raise FvdeskError(
            f"Device {preference!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FvdeskError(
            f"Device {preference!r} was requested but this torch build sees no CUDA GPU."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FvdeskError(
            f"Device {preference!r} does not exist: only {torch.cuda.device_count()} GPU(s) are visible."
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise FvdeskError(f"Device {preference!r} was requested but MPS is not available here.")
    return dev


def available_devices() -> list[str]:
    """Every device torch can render on here: the CPU, each CUDA GPU, Apple's MPS (the
    self-test renders on each, so a broken GPU setup shows up as one failed line)."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def describe_device(device: torch.device) -> str:
    """Human-readable device name for the status bar and gallery manifests."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
