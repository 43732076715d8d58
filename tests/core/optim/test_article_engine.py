"""The article's regularization spectrum, parameterizations and interaction jobs, each judged by
what it is for on real renders of the demo model (few steps, small canvases).

Frequency penalties must lower the high-frequency share of the result at equal steps; the
Laplacian pyramid must equalize the gradient's bands; octaves must end at the requested size;
MACO must keep its magnitude spectrum; a learned prior must render through a generator; the
frames of an interpolation must share their low-resolution component; a direction's value must
be the dot product it claims; the steepest-descent view must show the article's ordering.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fvdesk.core.errors import ConfigError, FvdeskError, RenderError
from fvdesk.core.jobs.job import (
    DirectionJob,
    InterpolationJob,
    Job,
    JobSpec,
    SpectrumJob,
    SteepestJob,
    Term,
    job_from_provenance,
)
from fvdesk.core.jobs.run import run_job
from fvdesk.core.model.loader import load_model
from fvdesk.core.optim import objectives as O
from fvdesk.core.optim import phases as phases_mod
from fvdesk.core.optim import regularizers as reg
from fvdesk.core.optim.drive import drive
from fvdesk.core.optim.events import PreviewEvent
from fvdesk.core.optim.maco import (
    MacoParam,
    load_spectrum,
    magnitude_grid,
    magnitude_spectrum_of_folder,
    save_spectrum,
)
from fvdesk.core.optim.render import render
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.steepest import SteepestAscent
from fvdesk.core.optim.variants import SPECTRUM, spectrum_keys, variant_settings
from tests.core.optim.test_engine_demo import high_frequency_share

BLOCK3 = "/features/block3/relu/Relu"
UNITS = [3, 10]


@pytest.fixture(scope="module")
def demo(demo_model_path):
    return load_model(demo_model_path, check_parity=False)


def bare(**changes) -> RenderSettings:
    """The spectrum row's unregularized baseline (pixels, nothing else) at test size."""
    return replace(variant_settings(RenderSettings(steps=24, size=32, batch=2), "none"), **changes)


def shares(model, settings: RenderSettings) -> np.ndarray:
    res = drive(render(model, O.channel(BLOCK3, UNITS), settings, batch=len(UNITS)))
    return high_frequency_share(res.images)


@pytest.fixture(scope="module")
def unregularized(demo) -> np.ndarray:
    return shares(demo, bare())


# -- frequency penalization and gradient preconditioning -------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [{"tv": 10.0}, {"blur_every": 4}, {"bilateral_every": 4}, {"grad_blur": 1.0}],
    ids=["total-variation", "blur", "bilateral", "gradient-blur"],
)
def test_frequency_regularizers_lower_the_high_frequency_share(demo, unregularized, changes):
    got = shares(demo, bare(**changes))
    # measured as a share of none's (0.72): TV 0.66, blur 0.56, bilateral 0.36, gradient blur 0.26
    assert got.mean() < 0.85 * unregularized.mean(), (got, unregularized)


def test_bilateral_filter_keeps_edges_and_removes_noise() -> None:
    g = torch.Generator().manual_seed(0)
    step = torch.zeros(1, 3, 32, 32)
    step[..., 16:] = 1.0  # an edge of height 1
    noisy = (step * 0.8 + 0.1 + 0.03 * torch.randn(step.shape, generator=g)).clamp(0, 1)
    out = reg.bilateral_filter(noisy, 1.5, 0.1)
    blurred = reg.gaussian_blur(noisy, 1.5)
    flat = (slice(None), slice(None), slice(None), slice(2, 12))
    assert out[flat].std() < 0.5 * noisy[flat].std()  # the noise is averaged away...
    edge = lambda x: float(x[..., 17].mean() - x[..., 14].mean())  # noqa: E731
    assert edge(out) > 0.95 * edge(noisy) > edge(blurred)  # ...the edge is not


def test_laplacian_normalization_equalizes_the_gradient_bands(demo) -> None:
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ext = demo.extractor([BLOCK3])
    O.channel(BLOCK3, 3)(ext(demo.prepare_input(x))).sum().backward()
    g = x.grad

    def band_rms(t: torch.Tensor) -> np.ndarray:
        return np.array([float(b.pow(2).mean().sqrt()) for b in reg.laplacian_bands(t, 4)])

    assert (reg.merge_bands(reg.laplacian_bands(g, 4)) - g).abs().max() < 1e-6 * g.abs().max()
    raw, normed = band_rms(g), band_rms(reg.laplacian_normalize(g, 4))
    # the CNN's gradient lives in its finest band (strided pooling: checkerboards) ...
    assert raw[0] > 10 * raw[-1], raw
    # ... and after normalization every octave carries about the same energy (measured 1.9x)
    assert normed.max() < 2.5 * normed.min(), normed


def test_laplacian_normalized_render_moves_coarse_structure(demo, unregularized) -> None:
    got = shares(demo, bare(lap_levels=4))
    assert got.mean() < 0.85 * unregularized.mean(), (got, unregularized)


def test_octaves_grow_and_end_at_the_requested_size(demo) -> None:
    plan = reg.octave_plan(30, (40, 40), 3, 1.5)
    assert [hw for _, hw in plan] == [(18, 18), (27, 27), (40, 40)] and plan[0][0] == 1
    s = RenderSettings(steps=30, size=40, batch=1, octaves=3, octave_scale=1.5, preview_every=5)
    events = []
    res = drive(render(demo, O.channel(BLOCK3, 3), s), events.append)
    sizes = [ev.images.shape[1] for ev in events if isinstance(ev, PreviewEvent)]
    assert sizes[0] == 18 and sorted(sizes) == sizes and sizes[-1] == 40
    assert res.images.shape[1:3] == (40, 40)
    assert res.values[0] > 0  # the upsampled image kept exciting the unit


def test_steepest_ascent_steps_have_the_size_of_their_metric() -> None:
    for metric in ("l2", "linf"):
        p = torch.zeros(2, 3, 8, 8, requires_grad=True)
        p.grad = torch.randn(2, 3, 8, 8) * torch.tensor([1.0, 100.0]).view(2, 1, 1, 1)
        SteepestAscent([p], lr=0.1, metric=metric).step()
        step = p.detach().flatten(1)
        if metric == "linf":
            assert torch.allclose(step.abs(), torch.full_like(step, 0.1))
        else:  # every image moves by the same RMS, whatever its gradient's size
            assert torch.allclose(step.pow(2).mean(1).sqrt(), torch.tensor([0.1, 0.1]))


# -- MACO ------------------------------------------------------------------------------------------
def test_maco_keeps_its_magnitude_spectrum_while_rendering(demo, monkeypatch) -> None:
    made = []
    real = phases_mod.make_param
    monkeypatch.setattr(
        phases_mod, "make_param", lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    )
    s = RenderSettings(steps=16, size=32, batch=2, param="maco")
    res = drive(render(demo, O.channel(BLOCK3, UNITS), s, batch=2))
    (p,) = made
    assert isinstance(p, MacoParam)
    with torch.no_grad():
        mag = torch.fft.rfft2(p.latent(), norm="ortho").abs()
        start = MacoParam(2, 32, 32, spectrum=p_spectrum(), seeds=p.seeds).latent()
    assert torch.allclose(mag, p.magnitude.expand_as(mag), atol=1e-4 * float(p.magnitude.max()))
    target = magnitude_grid(p_spectrum(), 32, 32)
    assert torch.allclose(p.magnitude / p.magnitude.max(), target / target.max(), atol=1e-6)
    assert (p.latent() - start).abs().mean() > 0.1  # the phase did move
    assert res.values.min() > 0
    # a natural spectrum has little power up high: far below the unregularized pixels' 0.69
    assert high_frequency_share(res.images).max() < 0.1


def p_spectrum():
    from fvdesk.core.optim.maco import spectrum_for

    return spectrum_for(None)


def test_spectrum_of_a_folder_saves_loads_and_fails_clearly(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):  # smooth images: a steep spectrum
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 80), Image.BILINEAR).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    spec = magnitude_spectrum_of_folder(folder, size=32)
    assert spec.images == 3 and spec.magnitude.shape == (3, 32, 32)
    m = spec.magnitude.mean(0)
    assert m[16, 18] > 5 * m[16, 31]  # low frequencies carry more than the highest
    path = save_spectrum(spec, tmp_path / "s.npz")
    back = load_spectrum(path)
    assert np.array_equal(back.magnitude, spec.magnitude) and back.sha256() == spec.sha256()
    (tmp_path / "bad.npz").write_bytes(b"not a spectrum")
    with pytest.raises(ConfigError, match="bad.npz"):
        load_spectrum(tmp_path / "bad.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty holds no images"):
        magnitude_spectrum_of_folder(tmp_path / "empty")


# -- learned prior ---------------------------------------------------------------------------------
class _TinyGenerator(torch.nn.Module):
    """latent (N, 16) -> tanh image (N, 3, 24, 24): a random-weight deconvolution stack (weights
    scaled up so its images have contrast to spare)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 16 * 6 * 6)
        self.up1 = torch.nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1)
        self.up2 = torch.nn.ConvTranspose2d(16, 3, 4, stride=2, padding=1)
        with torch.no_grad():
            for m in (self.fc, self.up1, self.up2):
                m.weight.mul_(3.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(z)).view(-1, 16, 6, 6)
        return torch.tanh(self.up2(torch.relu(self.up1(x))))


def _export(module: torch.nn.Module, example: torch.Tensor, path) -> str:
    torch.onnx.export(module, (example,), str(path), input_names=["z"], output_names=["out"],
                      dynamic_axes={"z": {0: "n"}, "out": {0: "n"}}, opset_version=17,
                      dynamo=False)  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    return _export(_TinyGenerator().eval(), torch.zeros(1, 16), folder / "gen.onnx")


def test_learned_prior_renders_through_a_generator(demo, generator_file, monkeypatch) -> None:
    made = []
    real = phases_mod.make_param
    monkeypatch.setattr(
        phases_mod, "make_param", lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    )
    logits = demo.graph.logits_name
    s = RenderSettings(steps=0, size=64, batch=1, param="prior", prior=generator_file, lr=0.1)
    start = drive(render(demo, O.logit(logits, 7), s)).values[0]
    res = drive(render(demo, O.logit(logits, 7), replace(s, steps=16)))
    assert res.images.shape == (1, 24, 24, 3)  # the generator's size, not the canvas setting
    assert res.values[0] > start + 0.8  # measured 3.4 -> 5.0: the latent moved to the class
    p = made[-1]
    with torch.no_grad():  # the result is exactly what the generator draws from its latent
        drawn = (p.generator.image(p.separate) + 1) / 2
    assert np.abs(res.images[0] / 255.0 - drawn[0].permute(1, 2, 0).numpy()).max() < 1 / 255 + 1e-6


def test_bad_generator_files_get_one_sentence(tmp_path, demo_model_path) -> None:
    from fvdesk.core.model.generator import load_generator

    class Vector(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z * 2

    cases = {
        "classifier": (str(demo_model_path), "latent input"),
        "vector": (_export(Vector(), torch.zeros(1, 8), tmp_path / "v.onnx"), "not an image"),
        "garbage": (str(tmp_path / "g.onnx"), "not a valid ONNX"),
    }
    (tmp_path / "g.onnx").write_bytes(b"\x00garbage")
    for path, words in cases.values():
        with pytest.raises(FvdeskError) as e:
            load_generator(path)
        text = str(e.value)
        assert words in text and str(path) in text and "\n" not in text


def test_prior_provenance_pins_the_generator(demo, generator_file, tmp_path) -> None:
    s = RenderSettings(steps=2, size=32, batch=1, param="prior", prior=generator_file)
    job = Job.for_model(demo, SpectrumJob((Term(demo.graph.logits_name, 1, "logit"),),
                                          variants=("none", "prior")), s)  # fmt: skip
    out = drive(run_job(demo, job))
    record = out.results[1].provenance
    assert record["settings"]["prior_sha256"] and out.results[1].caption == "Learned prior"
    import shutil

    moved = tmp_path / "gen.onnx"
    shutil.copy(generator_file, moved)
    rep = job_from_provenance(record)
    changed = replace(rep.job, settings=replace(rep.job.settings, prior=str(moved)))
    assert drive(run_job(demo, changed, only=rep.batch)).results[0].image.shape == (24, 24, 3)
    other = _TinyGenerator()
    with torch.no_grad():
        other.fc.bias.add_(1.0)
    _export(other.eval(), torch.zeros(1, 16), moved)  # same name, another generator
    with pytest.raises(FvdeskError, match="changed since"):
        drive(run_job(demo, changed, only=rep.batch))


# -- interaction between neurons -------------------------------------------------------------------
def test_interpolation_frames_share_their_low_resolution_component(demo, monkeypatch) -> None:
    made = []
    real = phases_mod.make_param
    monkeypatch.setattr(
        phases_mod, "make_param", lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    )
    s = RenderSettings(steps=16, size=32)
    a, b = (Term(BLOCK3, 1),), (Term(BLOCK3, 5),)

    def frames(**kw) -> np.ndarray:
        out = drive(run_job(demo, Job.for_model(demo, InterpolationJob(a, b, frames=4, **kw), s)))
        assert [r.caption for r in out.results] == ["t=0.00", "t=0.33", "t=0.67", "t=1.00"]
        return np.stack([r.image for r in out.results])

    shared = frames()
    p = made[-1]
    assert len(p.shared) == 6 and p.batch == 4  # Lucid's six low-resolution components
    with torch.no_grad():
        low = p.shared_latent()
        one = p.shared[0]  # keyframes=1: one image added to every frame
    assert one.shape[0] == 1 and float(low.abs().mean()) > 0.05  # learned, not the 0.01 start
    separate = frames(shared=False, alignment_weight=0.0)

    def common_share(x: np.ndarray) -> float:
        """How much of the frames' 8x-downsampled content is the same in every frame."""
        t = F.avg_pool2d(torch.tensor(x).permute(0, 3, 1, 2).float() / 255, 8)
        t = t - t.mean((1, 2, 3), keepdim=True)
        return 1 - float((t - t.mean(0)).pow(2).sum() / t.pow(2).sum())

    # measured 0.78 with the shared components, 0.33 with separate images from the same seed
    assert common_share(shared) > 0.65 and common_share(separate) < 0.5


def test_direction_value_is_the_dot_product_it_claims(demo, tmp_path) -> None:
    rows = np.random.default_rng(0).normal(size=(2, 64))
    np.save(tmp_path / "d.npy", rows)
    spec = DirectionJob.from_file(BLOCK3, tmp_path / "d.npy")
    assert len(spec.vectors) == 2 and spec.sha256 and JobSpec.from_dict(spec.to_dict()) == spec
    out = drive(run_job(demo, Job.for_model(demo, spec, RenderSettings(steps=12, size=32))))
    x = torch.tensor(np.stack([r.image for r in out.results])).permute(0, 3, 1, 2).float() / 255
    act = demo.activations(x, [BLOCK3])[BLOCK3].double().numpy()  # (2, 64, h, w)
    expected = np.einsum("bchw,bc->b", act, rows) / (act.shape[2] * act.shape[3])
    got = np.array([r.value for r in out.results])
    assert np.allclose(got, expected, rtol=0.02, atol=0.02 * np.abs(expected).max())
    assert got.min() > 0 and out.results[0].caption == "dir(/features/block3/relu/Relu, d.npy #0)"
    assert out.results[1].provenance["job"]["vectors"][1] == pytest.approx(rows[1].tolist())
    # a random direction is the seeded unit vector objectives.random_direction says
    v = O.random_direction(BLOCK3, 64, seed=7).vector
    assert torch.allclose(v.norm(), torch.tensor(1.0))
    act_t = torch.rand(3, 64, 4, 4)
    assert torch.allclose(O.Direction(BLOCK3, v)({BLOCK3: act_t}),
                          (act_t * v.view(1, -1, 1, 1)).sum(1).mean((1, 2)))  # fmt: skip
    np.save(tmp_path / "short.npy", np.ones(10))
    with pytest.raises(RenderError, match="10 values.*64 channels"):
        short = DirectionJob.from_file(BLOCK3, tmp_path / "short.npy")
        drive(run_job(demo, Job.for_model(demo, short, RenderSettings(steps=1, size=16))))
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    with pytest.raises(ConfigError, match="nan.npy"):
        DirectionJob.from_file(BLOCK3, tmp_path / "nan.npy")


# -- the article's figures -------------------------------------------------------------------------
def test_steepest_descent_view_orders_the_metrics_as_the_article(demo) -> None:
    job = Job.for_model(demo, SteepestJob((Term(BLOCK3, 3),)), RenderSettings(steps=2, size=32))
    out = drive(run_job(demo, job))
    assert [r.slot for r in out.results] == list(range(6))
    hf = high_frequency_share(np.stack([r.image for r in out.results[:3]]))
    l2, linf, fourier = hf
    # "optimizing in the decorrelated space reduces high frequencies, while using L-inf increases them"
    assert fourier < 0.5 * l2 and linf > l2, hf
    assert all(r.steps == 2 for r in out.results[3:])


def test_spectrum_variants_change_only_what_they_name() -> None:
    base = RenderSettings(steps=7, size=32, seed=3, tv=0.0, blur_every=2)
    assert "prior" not in spectrum_keys(base)
    assert spectrum_keys(replace(base, prior="g.onnx"))[-1] == "prior"
    keys = [v.key for v in SPECTRUM]
    assert keys[0] == "none" and keys.index("article") < keys.index("maco") < keys.index("prior")
    none = variant_settings(base, "none")
    assert none.param == "pixel" and none.transforms is None and not none.decorrelate
    assert (none.steps, none.size, none.seed) == (7, 32, 3)
    assert variant_settings(base, "tv").tv == 10.0  # the row's default strength
    assert variant_settings(base, "blur").blur_every == 2  # the user's strength wins
    art = variant_settings(base, "article")
    assert art.param == "fourier" and art.decorrelate and art.transforms is not None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"bilateral_sigma": 0.0}, "bilateral_sigma"),
        ({"lap_levels": 1}, "lap_levels"),
        ({"octaves": 3, "octave_scale": 1.0}, "octave_scale"),
        ({"octaves": 0}, "octaves"),
        ({"param": "prior"}, "prior"),
        ({"param": "prior", "prior": "g.onnx", "blur_every": 2}, "blur_every"),
        ({"prior_range": (1.0, -1.0)}, "prior_range"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"param": "wavelet"}, "param"),
    ],
)
def test_bad_settings_name_the_setting(changes, words) -> None:
    with pytest.raises(ConfigError, match=words):
        RenderSettings(**changes)
