"""The atlas: planning, sharding, resume after SIGKILL, merge."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fvdesk.cli import main
from fvdesk.core.output.atlas import (
    ATLAS_JSON,
    LayerSelectionError,
    layer_folder,
    parse_shard,
    plan_atlas,
    shard_work,
)
from fvdesk.core.output.gallery import CONTACT_SHEET, MANIFEST, manifest_files, read_gallery

ROOT = Path(__file__).resolve().parents[3]
FAST = ["--no-parity", "--device", "cpu"]


@pytest.fixture(scope="module")
def demo(demo_model_path):
    from fvdesk.core.model.loader import load_model

    return load_model(demo_model_path, check_parity=False)


@pytest.fixture(scope="module")
def relus(demo) -> list[str]:
    """Two ReLU feature maps of the demo model (names looked up, not hard-coded)."""
    names = [
        x.name for x in demo.graph if x.kind == "feature" and x.op == "Relu" and x.channels >= 8
    ]
    assert len(names) >= 2
    return names[:2]


def atlas_items(out: Path) -> dict[tuple[str, int], dict]:
    """Every committed unit of an atlas folder: (layer, unit) -> manifest entry (all manifests)."""
    found: dict[tuple[str, int], dict] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        for mf in manifest_files(folder):
            for d in json.loads(mf.read_text())["items"]:
                found[(d["layer"], d["unit"])] = {**d, "folder": folder.name}
    return found


def pngs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.png") if p.name != CONTACT_SHEET)


# -- pure helpers ----------------------------------------------------------------------------
def test_parse_shard() -> None:
    assert parse_shard("0/4", env={}) == (0, 4)
    assert parse_shard(" 3/4 ", env={}) == (3, 4)
    assert parse_shard("0/1", env={}) is None
    assert parse_shard(None, env={}) is None
    for bad in ("4/4", "-1/4", "a/b", "3", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad, env={})
    assert parse_shard("auto", env={}) is None
    assert parse_shard("auto", env={"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard("auto", env=slurm) == (2, 3)
    with pytest.raises(ValueError):
        parse_shard("auto", env={"LOCAL_RANK": "2", "WORLD_SIZE": "2"})


def test_shards_partition_the_work(demo) -> None:
    plan = plan_atlas(demo, units_per_layer=5)
    every = {(x.name, u) for x in plan for u in x.units}
    for n in (1, 2, 3, 7):
        parts = [{(x.name, u) for x, us in shard_work(plan, (i, n)) for u in us} for i in range(n)]
        assert set().union(*parts) == every
        assert sum(len(p) for p in parts) == len(every)  # disjoint
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_plan(demo, relus) -> None:
    plan = plan_atlas(demo)
    assert [x.name for x in plan] == [x.name for x in demo.graph if x.kind == "feature"]
    assert all(len(x.units) == demo.graph[x.name].channels for x in plan)
    folders = [layer_folder(x) for x in demo.graph]
    assert len(set(folders)) == len(folders)
    assert all("/" not in f and not f.startswith(".") for f in folders)
    plan = plan_atlas(demo, layers=[relus[1], relus[0]], units_per_layer=3)
    assert [x.name for x in plan] == relus and all(x.units == (0, 1, 2) for x in plan)
    assert {x.name for x in plan_atlas(demo, layers=["*Relu*"])} >= set(relus)
    with pytest.raises(LayerSelectionError, match="did you mean"):
        plan_atlas(demo, layers=[relus[0][:-1]])


# -- resume after kill -9 --------------------------------------------------------------------
def test_atlas_resumes_after_sigkill(tmp_path: Path, relus: list[str]) -> None:
    out = tmp_path / "atlas"
    cmd = [sys.executable, "-m", "fvdesk", "atlas", "--out", str(out), "--layers", *relus]
    # Many short batches: after the second commit at least 7 more batches remain, so the kill
    # lands mid-atlas however fast the machine is (8 units in 4 batches finished too soon).
    per_layer = 8
    cmd += ["--units-per-layer", str(per_layer), "--steps", "16", "--size", "32", "--batch", "1"]
    cmd += FAST
    total = 2 * per_layer
    proc = subprocess.Popen(
        [*cmd, "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 240
        committed = 0
        while committed < 2:
            assert proc.poll() is None, (
                f"the atlas ended before it could be killed: {proc.communicate()}"
            )
            assert time.monotonic() < deadline, "no unit was committed in time"
            time.sleep(0.05)
            try:
                committed = len(atlas_items(out)) if out.is_dir() else 0
            except (json.JSONDecodeError, OSError):  # never: manifests are replaced atomically
                pytest.fail("a reader saw a half-written manifest")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = atlas_items(out)
    assert 2 <= len(before) < total

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    m = re.search(r"(\d+) rendered, (\d+) already done", again.stdout)
    assert m and (int(m.group(1)), int(m.group(2))) == (total - len(before), len(before)), (
        again.stdout
    )

    after = atlas_items(out)
    assert sorted(after) == sorted((layer, u) for layer in relus for u in range(per_layer))
    for key, d in before.items():  # finished units were not rendered again
        assert after[key]["timestamp"] == d["timestamp"] and after[key]["file"] == d["file"]
    for folder in {d["folder"] for d in after.values()}:
        items = json.loads((out / folder / MANIFEST).read_text())["items"]
        assert len({(d["layer"], d["unit"], d["facet"]) for d in items}) == len(items) == per_layer
    files = pngs(out)
    assert len(files) == total  # one PNG per unit, no orphans or duplicates
    for p in files:
        with Image.open(p) as img:
            img.verify()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert (out / "index.html").is_file() and (out / ATLAS_JSON).is_file()


# -- shards, merge, settings -----------------------------------------------------------------
def test_shards_then_merge_equal_one_run(
    tmp_path: Path, relus: list[str], demo_model_path: Path, capsys
) -> None:
    common = ["atlas", str(demo_model_path), "--layers", *relus, "--units-per-layer", "3"]
    common += ["--steps", "4", "--size", "16", "--batch", "2", "--quiet", *FAST]
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    assert main([*common, "--out", str(sharded), "--shard", "0/2"]) == 0
    assert main([*common, "--out", str(sharded), "--shard", "1/2"]) == 0
    assert main(["atlas", "--merge", str(sharded), "--quiet"]) == 0
    assert main([*common, "--out", str(single)]) == 0
    capsys.readouterr()

    expected = {(layer, u) for layer in relus for u in range(3)}
    assert set(atlas_items(single)) == expected
    folders = sorted(p.name for p in single.iterdir() if p.is_dir())
    assert folders == sorted(p.name for p in sharded.iterdir() if p.is_dir())
    for folder in folders:
        assert any(p.name.startswith("gallery.shard-") for p in (sharded / folder).iterdir())
        merged = json.loads((sharded / folder / MANIFEST).read_text())["items"]
        one = json.loads((single / folder / MANIFEST).read_text())["items"]
        assert sorted(d["unit"] for d in merged) == sorted(d["unit"] for d in one) == [0, 1, 2]
        _, a = read_gallery(sharded / folder)
        _, b = read_gallery(single / folder)
        for (ia, ima), (ib, imb) in zip(a, b, strict=True):  # per-image seeds: same pictures
            assert ia.key == ib.key and ia.file == ib.file
            assert np.abs(ima.astype(int) - imb.astype(int)).max() <= 2
        assert (sharded / folder / CONTACT_SHEET).is_file()
    page = (sharded / "index.html").read_text()
    assert all(layer in page for layer in relus) and "6 of 6 units" in page


def test_settings_mismatch_is_refused_unless_forced(
    tmp_path: Path, relus: list[str], capsys
) -> None:
    out = tmp_path / "atlas"
    base = [
        "atlas",
        "--layers",
        relus[0],
        "--units-per-layer",
        "2",
        "--size",
        "16",
        "--quiet",
        *FAST,
    ]
    assert main([*base, "--steps", "2", "--out", str(out)]) == 0
    first = atlas_items(out)
    capsys.readouterr()
    assert main([*base, "--steps", "3", "--out", str(out)]) == 2
    assert "steps=2 (now 3)" in capsys.readouterr().err
    assert atlas_items(out) == first
    assert (
        main([*base, "--steps", "2", "--batch", "1", "--out", str(out)]) == 0
    )  # batch is speed only
    assert atlas_items(out) == first
    assert main([*base, "--steps", "3", "--out", str(out), "--force"]) == 0
    after = atlas_items(out)
    assert {k: d["steps"] for k, d in after.items()} == dict.fromkeys(first, 3)
    assert len(pngs(out)) == 2  # the superseded PNGs were pruned


def test_merge_and_out_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert main(["atlas", "--merge", str(tmp_path), "--quiet"]) == 1
    assert "not an fvdesk atlas" in capsys.readouterr().err
    assert main(["atlas", "--out", str(tmp_path), "--quiet", *FAST]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["atlas", "--quiet"]) == 2
    assert main(["atlas", "--out", str(tmp_path / "a"), "--shard", "2/2"]) == 2
    assert main(["atlas", "--out", str(tmp_path / "a"), "--layers", "nope", "--quiet", *FAST]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["notes.txt"]
