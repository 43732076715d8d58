"""Size-agnostic graphs that only run at multiples of a size (stride-2 stages joined by concats of
upsampled features or by residual adds): the loader measures the multiple, octaves, the spectrum's
octave tile and the canvas round to it, and an explicit ``--size`` off it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fvdesk.core.model.loader import load_model
from fvdesk.core.optim.regularizers import octave_plan
from fvdesk.core.output.gallery import read_gallery
from tests import models
from tests.cli.test_cli import FAST, run


@pytest.fixture(scope="module")
def unet32(model_cache: Path) -> Path:
    return models.needs_multiple_onnx(model_cache, multiple=32)


@pytest.fixture(scope="module")
def residual4(model_cache: Path) -> Path:
    return models.residual_stride_onnx(model_cache, stages=2)


def _layer(path: Path) -> str:
    """The last feature map: the extractor stops at the target, and the early ones come before
    any concat or add."""
    m = load_model(path, check_parity=False)
    return [x.name for x in m.graph if x.kind == "feature"][-1]


def test_loader_measures_the_size_multiple(unet32: Path, residual4: Path, model_cache) -> None:
    m = load_model(unet32, check_parity=False)
    assert not m.input.fixed_size and m.input.size_multiple == 32
    assert m.input.height % 32 == 0 and m.input.width % 32 == 0
    assert load_model(residual4, check_parity=False).input.size_multiple == 4
    plain = load_model(models.small_onnx(model_cache, "dynamic"), check_parity=False)
    assert plain.input.size_multiple == 1 and not plain.input.fixed_size


def test_octave_plan_rounds_to_the_multiple() -> None:
    plan = octave_plan(12, (128, 128), 4, 1.4, multiple=32)
    assert plan[-1][1] == (128, 128)
    assert all(h % 32 == 0 and w % 32 == 0 and h >= 32 for _, (h, w) in plan)
    assert octave_plan(12, (100, 100), 3, 1.4) == octave_plan(12, (100, 100), 3, 1.4, multiple=1)


@pytest.mark.parametrize("fixture", ["unet32", "residual4"])
def test_octaves_and_the_spectrum_render(
    request, capsys: pytest.CaptureFixture[str], tmp_path: Path, fixture: str
) -> None:
    path = request.getfixturevalue(fixture)
    layer = _layer(path)
    tiny = ["--steps", "3", "--size", "64", *FAST]
    code, _, err = run(capsys, "render", path, "--layer", layer, "--units", "0",
                       "--octaves", "3", "--out", tmp_path / "oct", *tiny)  # fmt: skip
    assert code == 0, err
    assert "internal error" not in err
    code, _, err = run(capsys, "render", path, "--layer", layer, "--units", "0", "--spectrum",
                       "--out", tmp_path / "row", *tiny)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(tmp_path / "row")
    assert "Multi-scale octaves" in {it.caption for it, _ in pairs}


def test_default_canvas_with_padding_renders(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, unet32: Path
) -> None:
    """No --size: the model's own (rounded) size; the transforms' padding (kept with --no-crop
    style settings) never reaches the graph off the multiple."""
    from fvdesk.core.optim.settings import TransformSettings
    from fvdesk.core.optim.transforms import RobustnessTransform

    t = RobustnessTransform(TransformSettings(crop=False, pad=5), (64, 64), multiple=32)
    assert t.out == (64, 64)
    code, _, err = run(capsys, "render", unet32, "--layer", _layer(unet32), "--units", "0",
                       "--steps", "2", "--out", tmp_path / "g", *FAST)  # fmt: skip
    assert code == 0, err


def test_explicit_size_off_the_multiple_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, unet32: Path
) -> None:
    code, _, err = run(capsys, "render", unet32, "--layer", _layer(unet32), "--units", "0",
                       "--steps", "2", "--size", "100", "--out", tmp_path / "g", *FAST)  # fmt: skip
    assert code == 2
    assert "multiples of 32; use 96 or 128" in err and unet32.name in err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1


def test_info_shows_the_multiple(capsys: pytest.CaptureFixture[str], unet32: Path) -> None:
    code, out, err = run(capsys, "info", unet32, "--json", *FAST)
    assert code == 0, err
    assert json.loads(out)["input"]["size_multiple"] == 32
    code, out, err = run(capsys, "info", unet32, *FAST)
    assert code == 0, err
    assert "any multiple of 32" in out


def test_settings_size_off_the_multiple_is_rounded_by_the_engine(unet32: Path) -> None:
    """The app's canvas size (any number of px) reaches the engine, which rounds it."""
    from fvdesk.core.jobs.job import UnitJob
    from fvdesk.core.jobs.run import render_units
    from fvdesk.core.optim.render import canvas_size
    from fvdesk.core.optim.settings import RenderSettings
    from tests.core.optim.test_render import drive

    m = load_model(unet32, check_parity=False)
    s = RenderSettings(steps=2, size=100, batch=1, octaves=2, device="cpu")
    assert canvas_size(m, s) == (96, 96)
    _, results = drive(render_units(m, UnitJob(_layer(unet32), [0]), s))
    assert len(results) == 1


def test_a_canvas_below_the_graphs_smallest_is_one_sentence_naming_the_smallest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_cache: Path
) -> None:
    """A size-agnostic net whose pools need 64 px (seen on a trained text-line classifier at
    --size 32): the logit render says which canvas works instead of torch's internal error."""
    path = models.pool_tail_onnx(model_cache)
    code, _, err = run(capsys, "render", path, "--objective", "logit", "--units", "0",
                       "--steps", "2", "--size", "32", "--out", tmp_path / "g", *FAST)  # fmt: skip
    assert code == 1, err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1
    assert path.name in err and "32x32 canvas" in err and "at least 64 px" in err
    code, _, err = run(capsys, "render", path, "--objective", "logit", "--units", "0",
                       "--steps", "2", "--size", "64", "--out", tmp_path / "g", *FAST)  # fmt: skip
    assert code == 0, err


def test_a_graph_that_only_runs_at_its_own_size_gets_it_from_the_user(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_cache: Path
) -> None:
    """Every dimension dynamic, yet only 48x48 runs (seen on PP-OCRv4's recognizer, 48x320): the
    refusal at the default 224 says how to give the size; --input-size loads it, --remember keeps
    it for the app and later runs, and the sidecar's size is what the loader uses."""
    import shutil

    from fvdesk.core.model.sidecar import read_sidecar

    path = Path(shutil.copy(models.own_size_onnx(model_cache), tmp_path / "own.onnx"))
    code, _, err = run(capsys, "info", path, *FAST)
    assert code == 1 and "internal error" not in err and len(err.strip().splitlines()) == 1
    assert "1x3x224x224" in err and "--input-size HxW --remember" in err
    assert "While executing" not in err  # torch.fx's node dump is not the user's business
    code, out, err = run(capsys, "info", path, "--input-size", "48", "--remember", "--json",
                         "--no-parity", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    spec = json.loads(out)["input"]
    assert (spec["height"], spec["width"]) == (48, 48)
    assert read_sidecar(path).input_size == (48, 48)
    assert load_model(path, check_parity=False).input.height == 48  # from the sidecar
    code, _, err = run(capsys, "info", path, "--input-size", "4x4000", *FAST)
    assert code == 2 and "is not a size" in err


def test_the_sidecar_input_size_is_checked(tmp_path: Path) -> None:
    from fvdesk.core.errors import ConfigError
    from fvdesk.core.model.sidecar import parse_input_size, read_sidecar, save_sidecar

    model = tmp_path / "m.onnx"
    save_sidecar(model, input_size=(48, 320))
    assert read_sidecar(model).input_size == (48, 320)
    assert parse_input_size("48x320") == parse_input_size([48, 320]) == (48, 320)
    for bad in ("48x", "0x10", [48], [48, 320, 3], True, "x"):
        with pytest.raises(ValueError):
            parse_input_size(bad)
    (tmp_path / "m.fvdesk.json").write_text('{"version": 1, "input_size": [2, 2]}')
    with pytest.raises(ConfigError, match="m.fvdesk.json has an 'input_size'"):
        read_sidecar(model)
