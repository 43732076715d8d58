"""From the parameterization's canvas to the graph's input: the canvas size, the model's
preprocessing probed as a per-pixel affine map, and that map fused into the robustness
transform's sampling so a step costs one pass over the batch."""

from __future__ import annotations

import torch

from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.transforms import RobustnessTransform


def canvas_size(model: LoadedModel, settings: RenderSettings) -> tuple[int, int]:
    """The canvas: ``settings.size`` or the model's size, rounded to the sizes a size-agnostic
    graph takes (``InputSpec.size_multiple``; the CLI refuses an explicit size that is off)."""
    if settings.size is not None:
        return model.input.round_view((settings.size, settings.size))
    return model.input.round_view((int(model.input.height), int(model.input.width)))


def _affine_preprocessing(
    model: LoadedModel, channels: int, device: torch.device, pre: Preprocessing | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``prepare_input`` as ``x -> M x + b`` per pixel (NCHW), measured by probing it.

    Every preset (range, mean/std, BGR, grayscale) is affine per pixel, so the renderer can fold
    it into the transform step (one pass instead of four); ``prepare_input`` stays the single
    definition.  ``None`` when the probe shows it is not affine (then it is called as is).
    """

    def nchw(y: torch.Tensor) -> torch.Tensor:
        return y.permute(0, 3, 1, 2) if model.input.layout == "NHWC" else y

    with torch.no_grad():
        eye = torch.eye(channels, device=device).view(channels, channels, 1, 1)
        probe = torch.cat([torch.zeros(1, channels, 1, 1, device=device), eye])
        out = nchw(model.prepare_input(probe, pre)).float()
        b = out[0, :, 0, 0]
        m = (out[1:, :, 0, 0] - b).T.contiguous()  # (C_out, C_in)
        check = torch.rand(2, channels, 3, 3, generator=torch.Generator().manual_seed(0)).to(device)
        want = nchw(model.prepare_input(check, pre)).float()
        got = torch.einsum("oc,bchw->bohw", m, check) + b.view(1, -1, 1, 1)
        if want.shape != got.shape or not torch.allclose(
            want, got, rtol=1e-4, atol=1e-4 * (1 + float(want.abs().max()))
        ):
            return None
    return m, b


class _InputPipeline:
    """Canvas images in [0, 1] -> the graph's input: robustness transforms, then the model's
    preprocessing and layout, fused into as few passes over the batch as possible."""

    def __init__(
        self,
        model: LoadedModel,
        tf: RobustnessTransform,
        channels: int,
        device: torch.device,
        pre: Preprocessing | None = None,
    ) -> None:
        self.model, self.tf, self.pre = model, tf, pre
        self.nhwc = model.input.layout == "NHWC"
        aff = _affine_preprocessing(model, channels, device, pre)
        self.affine = aff is not None
        if aff is None:
            return
        m, b = aff
        c = tf.outside_value()
        self.reflect = c is None
        # outside the canvas the model sees prep(c) = M c + b; sampling (M x - M c) with zeros
        # outside and adding prep(c) afterwards gives exactly that, and prep(x) inside
        outside = m @ torch.full((m.shape[1],), 0.0 if c is None else c, device=device) + b
        self.m = m
        self.diag = m.shape[0] == m.shape[1] and bool(
            (m - torch.diag(torch.diagonal(m))).abs().max() == 0
        )
        self.scale = torch.diagonal(m).view(1, -1, 1, 1).contiguous() if self.diag else None
        self.bias_full = b.view(1, -1, 1, 1)  # identity transform / reflection: M x + b
        self.bias_shift = (b - outside).view(1, -1, 1, 1)  # = -M c
        self.outside = outside.view(1, -1, 1, 1)

    def _affine(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            return torch.addcmul(bias, x, self.scale)
        return torch.nn.functional.conv2d(x, self.m[:, :, None, None], bias.flatten())

    def _layout(self, y: torch.Tensor) -> torch.Tensor:
        return y.permute(0, 2, 3, 1).contiguous() if self.nhwc else y

    def __call__(self, x01: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """Transform with ``params`` (``None``: the identity/fit only) and prepare."""
        tf = self.tf
        if not self.affine:
            y = tf.fit_only(x01) if params is None else tf.apply(x01, params)
            return self.model.prepare_input(y, self.pre)
        if params is None:
            if tf.out == tf.canvas and tf.view == tf.canvas:
                return self._layout(self._affine(x01, self.bias_full))
            params = torch.tensor(
                [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]] * x01.shape[0], dtype=torch.float64
            )
        if self.reflect:
            return self._layout(tf.warp(self._affine(x01, self.bias_full), params, reflect=True))
        return self._layout(tf.warp(self._affine(x01, self.bias_shift), params) + self.outside)
