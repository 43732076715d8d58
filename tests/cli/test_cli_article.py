"""``fvdesk render`` for the article's figures: --spectrum, --steepest, --direction, --interpolate,
and the regularizer flags; every item written reproduces with --from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fvdesk.core.optim.variants import SPECTRUM
from fvdesk.core.output.gallery import read_gallery
from tests.cli.test_cli import FAST, run

L = "/features/block3/relu/Relu"
TINY = ["--steps", "3", "--size", "16", *FAST]


def test_render_help_lists_the_article_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "--help")
    assert code == 0
    for flag in ("--spectrum", "--steepest", "--direction", "--directions", "--direction-seed",
                 "--interpolate", "--frames", "--alignment", "--bilateral-every", "--grad-blur",
                 "--lap-levels", "--octaves", "--optimizer", "--maco-spectrum", "--prior",
                 "--prior-range", "--tv", "--l1", "--blur-every"):  # fmt: skip
        assert flag in out, flag
    assert "maco" in out and "prior" in out  # the --param choices


def test_spectrum_writes_the_row_and_reproduces(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "row"
    code, _, err = run(capsys, "render", "--layer", L, "--units", "3", "--spectrum",
                       "--out", out_dir, *TINY)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(out_dir)
    by_facet = sorted(pairs, key=lambda p: p[0].facet)
    row = [v for v in SPECTRUM if v.key != "prior"]
    assert [it.caption for it, _ in by_facet] == [v.caption for v in row]
    assert {it.provenance["job"]["type"] for it, _ in pairs} == {"spectrum"}
    assert by_facet[-1][0].provenance["settings"]["maco_sha256"]  # MACO's spectrum is pinned
    # the unregularized tile is noise, the article's recipe is not (high-frequency share)
    from tests.core.optim.test_engine_demo import high_frequency_share

    hf = high_frequency_share(np.stack([img for _, img in by_facet]))
    assert hf[0] > 1.5 * hf[[v.key for v in row].index("article")]
    code, out, err = run(capsys, "render", "--from", out_dir, "--item", "0", "--item", "11", *FAST)
    assert code == 0, err
    assert out.count("identical to the saved image") == 2


def test_steepest_direction_and_interpolation_galleries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "render", "--layer", L, "--units", "3", "--steepest",
                       "--out", tmp_path / "st", *TINY)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(tmp_path / "st")
    assert len(pairs) == 6 and {it.objective for it, _ in pairs} == {"steepest"}
    np.save(tmp_path / "d.npy", np.random.default_rng(1).normal(size=(2, 64)))
    code, _, err = run(capsys, "render", "--layer", L, "--direction", tmp_path / "d.npy",
                       "--out", tmp_path / "dir", *TINY)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(tmp_path / "dir")
    assert len(pairs) == 2 and pairs[0][0].provenance["job"]["sha256"]
    code, _, err = run(capsys, "render", "--interpolate", f"{L}:1", f"{L}:5", "--frames", "3",
                       "--out", tmp_path / "int", *TINY)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(tmp_path / "int")
    assert sorted(it.caption for it, _ in pairs) == ["t=0.00", "t=0.50", "t=1.00"]
    assert pairs[0][0].provenance["job"]["shared"] is True  # the shared parameterization
    code, out, err = run(capsys, "render", "--from", tmp_path / "int", *FAST)
    assert code == 0 and out.count("identical") == 3, err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--spectrum", "--layer", L, "--units", "1,2"], "one objective"),
        (["--spectrum", "--steepest", "--layer", L, "--units", "1"], "cannot be combined"),
        (["--direction", "missing.npy", "--layer", L], "does not exist"),
        (["--layer", L, "--units", "1", "--lap-levels", "1"], "lap_levels"),
        (["--layer", L, "--units", "1", "--bilateral-sigma", "0"], "must be positive"),
        (["--layer", L, "--units", "1", "--param", "prior"], "generator"),
        (["--layer", L, "--units", "1", "--optimizer", "sgd"], "adam"),
    ],
)
def test_bad_article_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], words: str
) -> None:
    code, _, err = run(capsys, "render", *args, "--out", tmp_path / "x", *TINY)
    last = err.strip().splitlines()[-1]  # argparse prints its usage above the one line
    assert code == 2 and words in last and "error" in last, err


def test_color_from_a_folder_renders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--color-from DIR estimates the colour matrix (it used to fail on a list's .tolist())."""
    from PIL import Image

    rng = np.random.default_rng(2)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / f"{i}.png"
        )
    code, _, err = run(capsys, "render", "--layer", L, "--units", "1", "--color-from",
                       tmp_path / "imgs", "--out", tmp_path / "g", *TINY)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(tmp_path / "g")
    m = np.array(pairs[0][0].settings["color_matrix"])
    assert m.shape == (3, 3) and not np.allclose(m[0], [0.26, 0.09, 0.02])
