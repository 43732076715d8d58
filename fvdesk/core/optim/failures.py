"""How a render fails, in torch's words: out of memory (the batch policy halves the batch) and a
canvas too small for the graph's pooling windows (refused with the size that works)."""

from __future__ import annotations

import gc

import torch


class _OutOfMemory(Exception):
    def __init__(self, batch: int, step: int) -> None:
        super().__init__(f"out of memory at batch {batch}, step {step}")
        self.batch, self.step = batch, step


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


#: torch's words when a feature map has shrunk below a pooling or convolution window
_TOO_SMALL = (
    "output size is too small",
    "kernel size can't be greater than actual input size",
    "smaller than kernel size",
    "padding size should be less than the corresponding input dimension",
)


def _is_too_small(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in msg for w in _TOO_SMALL)


def _as_oom(e: Exception, batch: int) -> _OutOfMemory:
    """``e`` as an ``_OutOfMemory`` (raised anywhere in a render: setup, probe or step), else re-raise."""
    if isinstance(e, _OutOfMemory):
        return _OutOfMemory(e.batch, e.step)
    if _is_oom(e):
        return _OutOfMemory(batch, 0)
    raise e


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
