"""The activation atlas (Carter et al. 2019) on the demo model and generated pattern images:
cells cluster by pattern, each cell's render raises its own direction, resume, reproduction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("umap", reason="the activation atlas needs umap-learn (the atlas extra)")

from fvdesk.core.actatlas import build  # noqa: E402 - registers the runner
from fvdesk.core.actatlas.collect import per_image_cap, positions  # noqa: E402
from fvdesk.core.actatlas.layout import describe_share, grid_cells  # noqa: E402
from fvdesk.core.actatlas.spec import ActivationAtlasJob  # noqa: E402
from fvdesk.core.errors import ConfigError, FvdeskError  # noqa: E402
from fvdesk.core.jobs.job import Job  # noqa: E402
from fvdesk.core.jobs.run import run_job  # noqa: E402
from fvdesk.core.model.loader import load_model  # noqa: E402
from fvdesk.core.optim.drive import drive  # noqa: E402
from fvdesk.core.optim.settings import RenderSettings  # noqa: E402
from fvdesk.core.output import actatlas as out_mod  # noqa: E402
from tests.images import pattern_folder  # noqa: E402

#: the deepest map: its 22 px fields see enough of a pattern to tell it (block3's 18 px fields
#: on these 64 px images gave 45 % pure cells, block4 93 %)
LAYER = "/features/block4/relu/Relu"
SETTINGS = RenderSettings(steps=24, batch=8, size=64)
GRID = 10


@pytest.fixture(scope="module")
def demo(demo_model_path):
    return load_model(demo_model_path, check_parity=False)


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    return pattern_folder(tmp_path_factory.mktemp("patterns"), 10)


def make(demo, root: Path, out: Path, **kw) -> tuple[build.ActivationAtlasResult, list]:
    spec = ActivationAtlasJob(str(root), LAYER, str(out), **{"grid": GRID, "per_image": 6, **kw})
    events: list = []
    result = drive(run_job(demo, Job.for_model(demo, spec, SETTINGS)), events.append)
    return result, events


@pytest.fixture(scope="module")
def atlas(demo, patterns, tmp_path_factory):
    out = tmp_path_factory.mktemp("actatlas")
    result, events = make(demo, patterns, out)
    return out, result, events


def test_positions_are_seeded_per_image_and_capped():
    a = positions(3, "c1/005.png", 256, 8)
    assert np.array_equal(a, positions(3, "c1/005.png", 256, 8)) and len(set(a)) == 8
    assert not np.array_equal(a, positions(4, "c1/005.png", 256, 8))
    assert not np.array_equal(a, positions(3, "c1/006.png", 256, 8))
    assert per_image_cap(1000, 8, 64, max_vectors=2000, max_bytes=0) == 2
    assert per_image_cap(10, 8, 64, max_vectors=0, max_bytes=10 * 4 * 64 * 3) == 3


def test_grid_cells_need_the_threshold():
    coords = np.array([[0, 0], [0.1, 0.1], [0.05, 0], [1, 1], [0.95, 1.0]], float)
    vec = np.abs(np.random.default_rng(0).normal(size=(5, 4))).astype(np.float32)
    cells, owner, _box = grid_cells(coords, vec, 2, 3, 2)
    assert len(cells) == 1 and sorted(cells[0].members) == [0, 1, 2]
    assert (cells[0].i, cells[0].j) == (0, 0) and list(owner) == [0, 0, 0, -1, -1]
    assert np.allclose(cells[0].mean, vec[:3].mean(0)) and len(cells[0].crops) == 2


def test_the_folder_holds_tiles_crops_manifest_and_page(atlas):
    out, result, events = atlas
    m = out_mod.read_manifest(out)
    assert result.cells == len(m["cells"]) > 4 and result.rendered == result.cells
    assert m["collection"]["vectors"] == 80 * 6 and m["collection"]["per_image"] == 6
    for c in m["cells"]:
        assert c["count"] >= 3 and (out / c["tile"]).is_file()
        assert all((out / k["file"]).is_file() for k in c["crops"]) and c["crops"]
        assert c["class"] is not None and c["class"]["label"]
    assert (out / out_mod.OVERVIEW).is_file() and "cell 0" in (out / out_mod.INDEX).read_text()
    assert "fvdesk activation-atlas" in m["command"] and m["chunks"]
    kinds = {type(e).__name__ for e in events}
    assert {"ProgressEvent", "AtlasLaidOut", "CellRendered", "StepEvent"} <= kinds


def test_cells_of_one_pattern_cluster(atlas):
    """Each image is one pattern (its sub-folder): most cells hold one pattern's vectors."""
    out, _result, _ = atlas
    m = out_mod.read_manifest(out)
    z = build.load_vectors(out)
    pure = [c for c in m["cells"] if c["folders"][0][1] >= 0.8 * c["count"]]
    share = len(pure) / len(m["cells"])
    print(f"\ncells >= 80 % one pattern: {len(pure)}/{len(m['cells'])} = {share:.0%}")
    assert share >= 0.8
    # against chance: the same cells with the vectors' patterns shuffled are far less pure
    cells, _, _ = grid_cells(z["coords"], z["vectors"], GRID, 3, 0)
    assert len(cells) == len(m["cells"])
    sources = m["collection"]["sources"]  # vectors.npz "image" indexes them
    groups = np.array([p.split("/")[0] for p in sources])[z["image"]]
    assert describe_share(cells, groups) == share
    shuffled = np.random.default_rng(0).permutation(groups)
    assert describe_share(cells, shuffled) < share / 2


def _direction_values(demo, out: Path, m: dict) -> np.ndarray:
    """(renders, cells): each tile's mean activation along each cell's unit mean."""
    means = build.load_vectors(out)["means"]
    unit = torch.tensor(means / np.linalg.norm(means, axis=1, keepdims=True), dtype=torch.float32)
    tiles = np.stack([np.asarray(Image.open(out / c["tile"]).convert("RGB")) for c in m["cells"]])
    x01 = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        act = demo.extractor([LAYER])(demo.prepare_input(x01))[LAYER]
    return torch.einsum("bchw,kc->bk", act, unit).numpy() / (act.shape[2] * act.shape[3])


def test_each_cell_render_raises_its_own_direction(demo, atlas):
    out, _result, _ = atlas
    m = out_mod.read_manifest(out)
    v = _direction_values(demo, out, m)
    n = len(v)
    rng = np.random.default_rng(1)
    other = np.array([rng.choice([j for j in range(n) if j != i]) for i in range(n)])
    own, rand = v[np.arange(n), np.arange(n)], v[other, np.arange(n)]
    wins = float(np.mean(own > rand))
    print(f"\nown render beats a random cell's render on its direction: {wins:.0%} of {n} cells")
    assert wins >= 0.9


def test_a_second_run_resumes_and_a_rebuild_reproduces(demo, patterns, atlas, tmp_path):
    out, first, _ = atlas
    again, events = make(demo, patterns, out)
    assert again.rendered == 0 and again.skipped == first.cells
    assert not any(type(e).__name__ == "ProgressEvent" for e in events)  # no collection again
    # a killed run: two tiles gone and the manifest says so -> only their chunk is rendered
    part = tmp_path / "part"
    shutil.copytree(out, part)
    m = json.loads((part / out_mod.MANIFEST).read_text())
    m["job"]["out"] = str(part)
    for c in m["cells"][:2]:
        (part / c["tile"]).unlink()
    (part / out_mod.MANIFEST).write_text(json.dumps(m))
    resumed, _ = make(demo, patterns, part)
    assert resumed.rendered == SETTINGS.batch  # the first chunk only
    for c in m["cells"][:2]:
        assert (part / c["tile"]).read_bytes() == (out / c["tile"]).read_bytes()
    # the provenance rebuilds it: same vectors, cells and tiles, bit for bit on CPU
    job = build.job_from_manifest(out_mod.read_manifest(out), out=str(tmp_path / "again"))
    rebuilt = drive(run_job(demo, job))
    r = out_mod.read_manifest(rebuilt.out)
    assert (tmp_path / "again" / out_mod.VECTORS).read_bytes() == (
        out / out_mod.VECTORS
    ).read_bytes()
    assert [c["count"] for c in r["cells"]] == [c["count"] for c in m["cells"]]
    for a, b in zip(r["cells"], m["cells"], strict=True):
        assert (rebuilt.out / a["tile"]).read_bytes() == (out / b["tile"]).read_bytes()


def test_another_recipe_in_the_same_folder_is_refused(demo, patterns, atlas):
    out, _, _ = atlas
    with pytest.raises(ConfigError, match="another recipe"):
        make(demo, patterns, out, grid=GRID + 1)


def test_bad_input_is_one_sentence(demo, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FvdeskError, match="holds no images"):
        make(demo, tmp_path / "empty", tmp_path / "o")
    with pytest.raises(FvdeskError, match="spatial grid"):
        ActivationAtlasJob(str(tmp_path), "/classifier/Gemm", str(tmp_path)).validate(demo.graph)
    with pytest.raises(ConfigError, match="grid >= 1"):
        ActivationAtlasJob(str(tmp_path), LAYER, str(tmp_path), grid=0)
    with pytest.raises(ConfigError, match="not an fvdesk activation atlas|does not exist"):
        out_mod.read_manifest(tmp_path)


def test_without_umap_learn_one_sentence_says_how_to_get_it(monkeypatch):
    import sys

    from fvdesk.core.actatlas.layout import MISSING_UMAP, reduce_2d

    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    with pytest.raises(ConfigError) as e:
        reduce_2d(np.ones((8, 3), np.float32), seed=0, neighbors=3, min_dist=0.1)
    assert str(e.value) == MISSING_UMAP and "pip install" in MISSING_UMAP


def test_the_command_says_what_it_needs(tmp_path, capsys):
    from fvdesk.cli import main

    assert main(["activation-atlas", "--out", str(tmp_path / "o")]) == 2
    assert "--images DIR and --layer LAYER are required" in capsys.readouterr().err
    assert main(["activation-atlas", "--from", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no activation atlas there" in capsys.readouterr().err
