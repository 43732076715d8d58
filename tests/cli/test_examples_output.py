"""Dataset examples in galleries, the atlas and the command line (`fvdesk examples`,
`render --images`, `render --images --cluster-facets`, `atlas --images`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fvdesk.cli import main
from fvdesk.core.output.gallery import INDEX, MANIFEST, Gallery, GalleryItem, read_gallery
from tests.images import class_dir, pattern_folder

FAST = ["--no-parity", "--device", "cpu", "--quiet"]
RENDER = ["--steps", "4", "--size", "32", "--batch", "4"]
LOGITS = "/classifier/Gemm"
BLOCK2 = "/features/block2/relu/Relu"


pytestmark = pytest.mark.usefixtures("examples_cache")


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    return pattern_folder(tmp_path_factory.mktemp("patterns"), per_class=10)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_examples_command_writes_a_gallery_of_examples(
    capsys, patterns, tmp_path, examples_cache
) -> None:
    out = tmp_path / "g"
    code, _, err = run(capsys, "examples", "--images", patterns, "--layer", LOGITS, "--units",
                       "0-7", "--top", "9", "--bottom", "4", "--out", out, *FAST)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(out)
    assert len(pairs) == 8 and {it.objective for it, _ in pairs} == {"examples"}
    html = (out / INDEX).read_text(encoding="utf-8")
    for it, image in pairs:
        ex = it.examples
        assert len(ex["top"]) == 9 and len(ex["bottom"]) == 4 and ex["count"] == 80
        hits = sum(e["source"].startswith(class_dir(it.unit) + "/") for e in ex["top"])
        assert hits >= 8
        assert ex["top"][0]["value"] >= ex["top"][-1]["value"] > ex["bottom"][-1]["value"]
        for e in ex["top"] + ex["bottom"]:
            assert (out / e["file"]).is_file() and e["file"] in html
            assert (patterns / e["source"]).is_file()  # relative to the dataset root
        assert sum(ex["histogram"]["counts"]) == 80
        assert image.shape[0] > 64  # a grid of the top crops
    assert "most excited" in html and "<svg" in html
    # listing without --out, and the cache commands
    code, listing, _ = run(capsys, "examples", "--images", patterns, "--layer", LOGITS,
                           "--units", "2", *FAST)  # fmt: skip
    assert code == 0 and listing.startswith(f"{LOGITS}:2 diagonal stripes /: c2/")
    code, text, _ = run(capsys, "examples", "--cache")
    assert code == 0 and str(examples_cache) in text and "0 bytes" not in text
    code, text, _ = run(capsys, "examples", "--clear-cache")
    assert code == 0 and text.startswith("Cleared ") and not any(examples_cache.rglob("*.rows"))


def test_examples_command_errors(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "examples", "--layer", LOGITS, *FAST)
    assert code == 2 and "--images DIR and --layer LAYER are required" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "examples", "--images", tmp_path / "empty", "--layer", LOGITS, *FAST)
    assert code == 1 and "holds no images" in err
    code, _, err = run(capsys, "examples", "--images", tmp_path, "--layer", "nope", *FAST)
    assert code == 2 and "no layer named 'nope'" in err


def test_render_with_images_attaches_examples_and_still_reproduces(
    capsys, patterns, tmp_path
) -> None:
    out = tmp_path / "r"
    code, _, err = run(capsys, "render", "--layer", BLOCK2, "--units", "0,5", "--images",
                       patterns, "--top", "5", "--bottom", "2", "--out", out, *RENDER, *FAST)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(out)
    assert [it.unit for it, _ in pairs] == [0, 5]
    for it, _ in pairs:
        assert len(it.examples["top"]) == 5 and len(it.examples["bottom"]) == 2
        assert 0.0 <= it.examples["below"] <= 1.0
    code, text, _ = run(capsys, "render", "--from", out, "--device", "cpu", "--no-parity")
    assert code == 0 and text.count("identical to the saved image") == 2
    code, _, err = run(capsys, "render", "--objective", "L:0 + L:1".replace("L", BLOCK2),
                       "--images", patterns, "--out", tmp_path / "c", *RENDER, *FAST)  # fmt: skip
    assert code == 2 and "--images goes with renders of units" in err


def test_cluster_facets_render_their_clusters_and_reproduce(capsys, patterns, tmp_path) -> None:
    out = tmp_path / "k"
    code, _, err = run(capsys, "render", "--objective", "logit", "--units", "6", "--diversity",
                       "3", "--cluster-facets", "--images", patterns, "--out", out,
                       *RENDER, *FAST)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(out)
    assert [(it.unit, it.facet, it.objective) for it, _ in pairs] == [
        (6, f, "cluster") for f in range(3)
    ]
    sources = [{e["source"] for e in it.examples["top"]} for it, _ in pairs]
    assert all(sources) and not (sources[0] & sources[1]) and not (sources[1] & sources[2])
    job = pairs[0][0].provenance["job"]
    assert job["type"] == "clusters" and len(job["centroids"]) == 3
    assert sorted(p for m in job["members"] for p in m)  # the members are on record
    code, text, _ = run(
        capsys, "render", "--from", out, "--item", "1", "--device", "cpu", "--no-parity"
    )
    assert code == 0 and "identical to the saved image" in text
    code, _, err = run(capsys, "render", "--objective", "logit", "--units", "6", "--cluster-facets",
                       "--images", patterns, "--out", tmp_path / "x", *RENDER, *FAST)  # fmt: skip
    assert code == 2 and "--diversity N" in err


def test_readme_cluster_facets_command_runs_without_a_render_batch(capsys, tmp_path) -> None:
    """The README's command as written: ``render --batch`` (images optimized together) is unset,
    and must not be taken for the dataset pass's batch (it was: "'batch' must be a whole number,
    got None")."""
    images = pattern_folder(tmp_path / "images", per_class=2, size=32)
    out = tmp_path / "G"
    code, _, err = run(capsys, "render", "--objective", "logit", "--units", "6", "--diversity",
                       "4", "--cluster-facets", "--images", images, "--out", out,
                       "--steps", "2", "--size", "32", *FAST)  # fmt: skip
    assert code == 0, err
    _, pairs = read_gallery(out, images=False)
    assert [(it.unit, it.objective) for it, _ in pairs] == [(6, "cluster")] * 4
    assert all(it.examples["top"] for it, _ in pairs)
    code, _, err = run(capsys, "atlas", "--layers", LOGITS, "--units-per-layer", "1", "--images",
                       images, "--out", tmp_path / "A", "--steps", "2", "--size", "32", *FAST)  # fmt: skip
    assert code == 0, err


def test_atlas_with_images_gives_every_unit_examples_also_when_resumed(
    capsys, patterns, tmp_path
) -> None:
    out = tmp_path / "atlas"
    args = ["atlas", "--layers", BLOCK2, "--units-per-layer", "2", "--out", out, *RENDER, *FAST]
    assert run(capsys, *args)[0] == 0
    folder = next(p for p in out.iterdir() if p.is_dir())
    assert all(not it.examples for it, _ in read_gallery(folder, images=False)[1])
    code, _, err = run(capsys, *args, "--images", patterns, "--top", "3")
    assert code == 0, err
    _, pairs = read_gallery(folder, images=False)
    assert len(pairs) == 2 and all(len(it.examples["top"]) == 3 for it, _ in pairs)
    assert "examples/" in (folder / INDEX).read_text(encoding="utf-8")


# -- the gallery format -------------------------------------------------------------------------
def test_examples_field_is_optional_sanitized_and_pruned(tmp_path) -> None:
    from fvdesk.core.output.gallery import ModelInfo

    g = Gallery.open(tmp_path / "g", ModelInfo("m.onnx", "ab" * 32))
    (it,) = g.add_many([(GalleryItem("L", 1), np.zeros((4, 4, 3), np.uint8))])
    (tmp_path / "g" / "examples").mkdir()
    for name in ("keep.png", "orphan.png"):
        (tmp_path / "g" / "examples" / name).write_bytes(b"png")
    rec = {"top": [{"file": "examples/keep.png", "value": 1.0}, {"file": "../outside.png"},
                   {"file": "examples/../x.png"}], "bottom": []}  # fmt: skip
    from dataclasses import replace

    g.update_items([replace(it, examples=rec)])
    loaded = read_gallery(tmp_path / "g", images=False)[1][0][0]
    assert [e["file"] for e in loaded.examples["top"]] == ["examples/keep.png"]
    g.prune()
    assert (tmp_path / "g" / "examples" / "keep.png").exists()
    assert not (tmp_path / "g" / "examples" / "orphan.png").exists()
    manifest = json.loads((tmp_path / "g" / MANIFEST).read_text())
    for d in manifest["items"]:
        d.pop("examples")  # a manifest written before examples existed
    (tmp_path / "g" / MANIFEST).write_text(json.dumps(manifest))
    assert read_gallery(tmp_path / "g", images=False)[1][0][0].examples == {}
