"""Image parameterizations: the Fourier preconditioner, colour decorrelation and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.param import (
    IMAGENET_COLOR_SQRT,
    ImageParam,
    color_matrix_from_folder,
    color_matrix_from_images,
    gaussian_blur,
    normalized_color_matrix,
    rfft_frequencies,
    spectrum_scale,
)


def hf_share(x: torch.Tensor, cut: float = 0.25) -> float:
    """Share of non-DC spectral power above ``cut`` cycles/pixel (mean over the batch)."""
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = torch.fft.fft2(x).abs() ** 2
    h, w = x.shape[-2:]
    f = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    return float((p[..., f > cut].sum() / p.sum()).item())


def test_spectrum_scale_is_inverse_frequency_clamped_at_one_over_size() -> None:
    s = spectrum_scale(32, 48, decay=1.0)
    f = rfft_frequencies(32, 48)
    assert s.shape == (32, 25) and f.shape == (32, 25)
    assert s[0, 0].item() == pytest.approx(48.0)  # DC: 1 / (1/max(h, w))
    assert s[0, 24].item() == pytest.approx(2.0)  # fx = 0.5 -> 1/0.5
    assert s[16, 0].item() == pytest.approx(2.0)  # fy = -0.5
    assert s[0, 3].item() == pytest.approx(16.0)  # fx = 3/48
    assert spectrum_scale(32, 48, decay=2.0)[0, 24].item() == pytest.approx(4.0)
    assert spectrum_scale(32, 48, decay=0.0).unique().tolist() == [1.0]


def test_imagenet_colour_matrix_normalized_by_max_column_norm() -> None:
    m = normalized_color_matrix()
    raw = torch.tensor(IMAGENET_COLOR_SQRT)
    assert raw.norm(dim=0).max().item() == pytest.approx(0.46195, abs=1e-4)  # Lucid's constant
    assert m.norm(dim=0).max().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(m * 0.46195, raw, atol=1e-4)
    with pytest.raises(ConfigError):
        normalized_color_matrix([[1, 2], [3, 4]])
    with pytest.raises(ConfigError):
        normalized_color_matrix([[0] * 3] * 3)


@pytest.mark.parametrize("method", ["svd", "cholesky"])
def test_colour_matrix_from_images_is_a_square_root_of_the_covariance(method: str) -> None:
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.3, 0.0], [0.6, 0.2, 0.2]])
    pixels = rng.standard_normal((4000, 3)) @ mix.T * 0.1 + 0.5
    images = pixels.reshape(10, 20, 20, 3)  # NHWC
    m = np.array(color_matrix_from_images(images, method))
    cov = np.cov(pixels, rowvar=False)
    np.testing.assert_allclose(m @ m.T, cov, atol=1e-6)
    if method == "cholesky":
        assert np.allclose(np.triu(m, 1), 0)
    nchw = images.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(np.array(color_matrix_from_images(nchw, method)), m, atol=1e-9)
    with pytest.raises(ConfigError):
        color_matrix_from_images(images, "qr")  # type: ignore[arg-type]


def test_colour_matrix_from_folder(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(3):
        base = rng.random(3)
        arr = np.clip(base + rng.standard_normal((16, 16, 1)) * 0.1, 0, 1)
        Image.fromarray((np.broadcast_to(arr, (16, 16, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    (tmp_path / "notes.txt").write_text("not an image")
    m = np.array(color_matrix_from_folder(tmp_path))
    assert m.shape == (3, 3) and np.isfinite(m).all()
    with pytest.raises(ConfigError, match="not a folder"):
        color_matrix_from_folder(tmp_path / "does_not_exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no readable images"):
        color_matrix_from_folder(empty)


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_images_in_unit_range_near_grey_at_start(kind: str) -> None:
    p = ImageParam(4, 32, 40, kind=kind)  # type: ignore[arg-type]
    x = p()
    assert x.shape == (4, 3, 32, 40)
    assert x.min() >= 0 and x.max() <= 1
    assert abs(x.mean().item() - 0.5) < 0.02 and x.std().item() < 0.05
    u8 = p.to_uint8()
    assert u8.shape == (4, 32, 40, 3) and u8.dtype == np.uint8


def test_grayscale_parameterization_has_one_channel_and_no_colour_mixing() -> None:
    p = ImageParam(2, 16, channels=1, decorrelate=True)
    assert p().shape == (2, 1, 16, 16)
    assert not p.decorrelate
    assert p.to_uint8().shape == (2, 16, 16, 1)


def test_fourier_start_is_smoother_than_pixel_start() -> None:
    """A random spectrum scaled by 1/f is a natural-looking (low-frequency) image; pixels are white."""
    f = ImageParam(8, 64, kind="fourier", decorrelate=False, sd=0.01).latent()
    p = ImageParam(8, 64, kind="pixel", decorrelate=False, sd=0.01).latent()
    assert hf_share(f) < 0.3 < 0.7 < hf_share(p)


def test_seeds_are_per_image_and_independent_of_batch_composition() -> None:
    a = ImageParam(3, 16, seeds=[5, 6, 7])()
    b = ImageParam(2, 16, seeds=[7, 5])()
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ConfigError):
        ImageParam(2, 16, seeds=[1])


def test_colour_decorrelation_mixes_channels() -> None:
    p = ImageParam(1, 8, decorrelate=True, seeds=[0])
    q = ImageParam(1, 8, decorrelate=False, seeds=[0])
    lat = q.latent()
    mixed = torch.sigmoid(torch.einsum("bchw,dc->bdhw", lat, normalized_color_matrix()))
    assert torch.allclose(p(), mixed, atol=1e-6)
    assert torch.allclose(q(), torch.sigmoid(lat))
    custom = ImageParam(1, 8, color_matrix=[[1, 0, 0], [0, 2, 0], [0, 0, 1]], seeds=[0])
    assert torch.allclose(custom.color, torch.diag(torch.tensor([0.5, 1.0, 0.5])))


def test_gradients_reach_the_latent_and_shared_components() -> None:
    p = ImageParam(5, 32, shared=[(1, 4), (2, 8)])
    p().mean().backward()
    assert p.separate.grad is not None and p.separate.grad.abs().sum() > 0
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in p.shared)
    assert p.shared[0].shape == (1, 3, 8, 8) and p.shared[1].shape == (2, 3, 4, 4)


def test_shared_component_is_common_to_the_batch() -> None:
    p = ImageParam(4, 16, shared=[(1, 2)], sd=0.0)
    with torch.no_grad():
        p.shared[0].normal_()
    x = p.latent()
    assert torch.allclose(x[0], x[3]) and x[0].abs().sum() > 0
    q = ImageParam(3, 16, shared=[(2, 2)], sd=0.0)
    with torch.no_grad():
        q.shared[0][0].fill_(1.0)
        q.shared[0][1].fill_(-1.0)
    y = q.latent()  # keyframes interpolate along the batch: +1, 0, -1
    assert torch.allclose(y[0], torch.ones_like(y[0]))
    assert torch.allclose(y[1], torch.zeros_like(y[1]), atol=1e-6)
    assert torch.allclose(y[2], -torch.ones_like(y[2]))


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_blur_removes_high_frequencies(kind: str) -> None:
    p = ImageParam(2, 32, kind=kind, sd=0.5)  # type: ignore[arg-type]
    before = hf_share(p.latent().detach())
    p.blur_(1.0)
    after = hf_share(p.latent().detach())
    assert after < 0.5 * before


def test_gaussian_blur_preserves_constants_and_handles_tiny_images() -> None:
    x = torch.full((1, 3, 10, 10), 0.7)
    assert torch.allclose(gaussian_blur(x, 1.5), x, atol=1e-6)
    tiny = torch.rand(1, 3, 2, 2)
    assert gaussian_blur(tiny, 2.0).shape == tiny.shape


def test_reinit_restarts_only_the_given_images() -> None:
    p = ImageParam(3, 16, seeds=[1, 2, 3])
    before = p.separate.detach().clone()
    p.reinit_([1], sd=0.5)
    assert torch.equal(p.separate[0], before[0]) and torch.equal(p.separate[2], before[2])
    assert p.separate[1].std() > 10 * before[1].std()


def test_invalid_parameterizations_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        ImageParam(1, 16, kind="wavelet")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ImageParam(0, 16)
    with pytest.raises(ConfigError):
        ImageParam(1, 16, channels=4)


def test_spectrum_period_caps_the_gain_of_the_largest_structures() -> None:
    plain, capped = spectrum_scale(32, 48, decay=1.5), spectrum_scale(32, 48, 1.5, period=12.0)
    f = rfft_frequencies(32, 48)
    low = f < 1.0 / 12
    assert torch.allclose(capped[low], torch.full_like(capped[low], 12.0**1.5))
    assert torch.equal(capped[~low], plain[~low])  # the rest of the spectrum is unchanged
    assert plain[0, 0].item() == pytest.approx(48.0**1.5)  # far above the cap
    # 0 or a period beyond the canvas: Lucid's floor at 1 / max(h, w)
    assert torch.equal(spectrum_scale(32, 48, 1.5, period=0.0), plain)
    assert torch.equal(spectrum_scale(32, 48, 1.5, period=100.0), plain)
