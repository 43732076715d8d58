"""The gallery format: sanitized names, crash safety, resume, shards, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fvdesk.core.errors import GalleryError
from fvdesk.core.output import gallery as gal
from fvdesk.core.output import store
from fvdesk.core.output.gallery import (
    CONTACT_SHEET,
    INDEX,
    MANIFEST,
    Gallery,
    GalleryItem,
    ModelInfo,
    merge_gallery,
    read_gallery,
    safe_stem,
    write_gallery,
)

MODEL = ModelInfo("net.onnx", "a" * 64)
OTHER = ModelInfo("other.onnx", "b" * 64)
_FORBIDDEN = set('/\\:*?"<>|')


def image(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def item(layer: str = "conv1", unit: int = 0, **kw) -> GalleryItem:
    kw.setdefault("value", 1.5 + unit)
    kw.setdefault("provenance", {"settings": {"steps": 8, "size": 16, "seed": 0}})
    return GalleryItem(layer=layer, unit=unit, **kw)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        "/layer1/layer1.0/conv1/Conv",
        'a\\b:c*d?e"f<g>h|i',
        "tab\there\nnewline\x00nul\x7f",
        "trailing dots...",
        "trailing spaces   ",
        "...hidden",
        "",
        "CON",
        "nul.txt",
        "Com1",
        "lpt9.png",
        "x" * 400,
        "ü" * 300,
        "zero\u200bwidth\u202eoverride",
    ],
)
def test_safe_stem_is_portable(raw: str) -> None:
    s = safe_stem(raw)
    assert s and not (_FORBIDDEN & set(s))
    assert all(ord(c) >= 32 and c not in "\u200b\u202e" for c in s)
    assert not s.endswith((".", " ")) and not s.startswith((".", " "))
    assert s.split(".")[0].upper() not in {"CON", "NUL", "COM1", "LPT9", "PRN", "AUX"}
    assert len(s.encode("utf-8")) <= gal.MAX_STEM_BYTES


def test_safe_stem_keeps_plain_names_and_distinguishes_long_ones() -> None:
    assert safe_stem("conv1_u0003") == "conv1_u0003"
    a, b = safe_stem("x" * 300 + "a"), safe_stem("x" * 300 + "b")
    assert a != b


def test_sanitizing_collisions_get_distinct_files(tmp_path: Path) -> None:
    g = Gallery.open(tmp_path / "g", MODEL)
    names = []
    for layer in ["a/b", "a_b", "a:b", "A_B", "CON", "con"]:
        names.append(g.add(item(layer, 1), image(1)).file)
    folded = [n.casefold() for n in names]
    assert len(set(folded)) == len(names), names
    assert names[0] == "a_b_u0001.png"  # the first claimant of a name keeps it
    for n in names:
        assert (tmp_path / "g" / n).is_file()
        assert not (_FORBIDDEN & set(n))


# -- manifest, resume, refusal ---------------------------------------------------------------
def test_manifest_records_everything(tmp_path: Path) -> None:
    g = Gallery.open(tmp_path, MODEL, device="cpu (2 threads)", title="conv1")
    it = g.add(item("conv1", 3, label="stripes", seed=7, steps=8, seconds=0.25), image(3))
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == "fvdesk-gallery" and data["version"] == 2
    assert data["model"] == {"file": "net.onnx", "sha256": "a" * 64}
    for key in ("fvdesk_version", "device", "created", "updated", "items"):
        assert key in data
    (entry,) = data["items"]
    expected = {"file", "layer", "unit", "facet", "label", "objective", "negative", "value", "dead"}
    expected |= {"seed", "steps", "provenance", "caption", "timestamp", "device", "seconds"}
    assert expected <= set(entry)
    assert entry["file"] == it.file == "conv1_u0003.png"
    assert entry["provenance"]["settings"] == {"steps": 8, "size": 16, "seed": 0}
    assert entry["device"] == "cpu (2 threads)" and entry["label"] == "stripes"


def test_version_1_manifests_still_open(tmp_path: Path) -> None:
    """Galleries of fvdesk 0.1 kept ``settings`` per item and no provenance record."""
    g = Gallery.open(tmp_path, MODEL)
    g.add(item("conv1", 2), image(2))
    data = json.loads((tmp_path / MANIFEST).read_text())
    data["version"] = 1
    for entry in data["items"]:
        entry["settings"] = entry.pop("provenance")["settings"]
        entry.pop("caption")
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    _, pairs = read_gallery(tmp_path)
    ((it, img),) = pairs
    assert it.settings == {"steps": 8, "size": 16, "seed": 0} and (img == image(2)).all()


def test_resume_sees_committed_items(tmp_path: Path) -> None:
    g = Gallery.open(tmp_path, MODEL)
    for u in range(3):
        g.add(item(unit=u), image(u))
    g2 = Gallery.open(tmp_path, MODEL)
    assert [g2.has("conv1", u) for u in range(4)] == [True, True, True, False]
    assert not g2.has("conv1", 0, objective="neuron")
    assert not g2.has("conv1", 0, negative=True)
    assert not g2.has("conv1", 0, facet=1)


def test_refuses_other_model_foreign_folder_and_corrupt_manifest(tmp_path: Path) -> None:
    Gallery.open(tmp_path / "g", MODEL).add(item(), image(0))
    with pytest.raises(GalleryError, match="different model") as e:
        Gallery.open(tmp_path / "g", OTHER)
    assert str(tmp_path / "g") in str(e.value)

    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(GalleryError, match="not an fvdesk gallery"):
        Gallery.open(foreign, MODEL)
    assert (foreign / "notes.txt").read_text() == "mine"

    (tmp_path / "g" / MANIFEST).write_text("{not json")
    with pytest.raises(GalleryError, match="corrupt") as e:
        Gallery.open(tmp_path / "g", MODEL)
    assert MANIFEST in str(e.value)

    (tmp_path / "g" / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(GalleryError, match="not an fvdesk gallery"):
        read_gallery(tmp_path / "g")


def test_unwritable_folder_is_a_gallery_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GalleryError, match="not a gallery folder|Cannot create"):
        Gallery.open(blocker, MODEL)
    with pytest.raises(GalleryError, match="Cannot create"):
        Gallery.open(blocker / "sub", MODEL)


def test_failed_commit_leaves_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = Gallery.open(tmp_path, MODEL)
    g.add(item(unit=0), image(0))
    before = (tmp_path / MANIFEST).read_bytes()

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "atomic_write_text", boom)  # the manifest commit
    with pytest.raises(GalleryError, match="No space left"):
        g.add(item(unit=1), image(1))
    assert not g.has("conv1", 1)
    monkeypatch.undo()
    assert (tmp_path / MANIFEST).read_bytes() == before
    # What a kill between PNG and manifest leaves: a PNG without entry, redone under the same name.
    assert (tmp_path / "conv1_u0001.png").is_file()
    g2 = Gallery.open(tmp_path, MODEL)
    assert not g2.has("conv1", 1)
    assert g2.add(item(unit=1), image(11)).file == "conv1_u0001.png"
    _, pairs = read_gallery(tmp_path)
    assert np.array_equal(dict((i.unit, im) for i, im in pairs)[1], image(11))


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    Gallery.open(tmp_path, MODEL)
    (tmp_path / ".conv1_u0002.png.abc123.tmp").write_bytes(b"half a png")
    (tmp_path / ".gallery.json.zzz.tmp").write_bytes(b"{half")
    g = Gallery.open(tmp_path, MODEL)
    assert not (tmp_path / ".gallery.json.zzz.tmp").exists()
    g.add(item(unit=2), image(2))
    assert not (tmp_path / ".conv1_u0002.png.abc123.tmp").exists()


# -- round trip, finalize --------------------------------------------------------------------
def test_round_trip_and_finalize(tmp_path: Path) -> None:
    g = Gallery.open(tmp_path, MODEL, title="<b>conv</b>")
    gray = np.random.default_rng(5).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    added = [
        g.add(item("conv<1>&", 0, label="a <script>", dead=True), image(0)),
        g.add(item("conv<1>&", 1, objective="neuron", negative=True, facet=2), image(1, 24)),
        g.add(item("fc", 5, objective="logit", label="stripes"), gray),
    ]
    g.finalize()
    manifest, pairs = read_gallery(tmp_path)
    assert manifest["model"]["sha256"] == MODEL.sha256
    got = {it.key: (it, im) for it, im in pairs}
    assert len(got) == 3
    for a, src in zip(added, [image(0), image(1, 24), gray], strict=True):
        it, im = got[a.key]
        assert it == a
        assert np.array_equal(im, src)
    with Image.open(tmp_path / CONTACT_SHEET) as sheet:
        assert sheet.width >= 128 and sheet.height >= 128
        assert np.asarray(sheet.convert("L")).std() > 5  # not blank
    page = (tmp_path / INDEX).read_text()
    assert "<script>" not in page and "a &lt;script&gt;" in page
    assert "&lt;b&gt;conv&lt;/b&gt;" in page and "net.onnx" in page
    for it in added:
        assert (
            f'src="{it.file.replace("&", "%26").replace("<", "%3C").replace(">", "%3E")}"' in page
        )
    assert "steps" in page  # settings summary


def test_read_gallery_reports_missing_png(tmp_path: Path) -> None:
    g = Gallery.open(tmp_path, MODEL)
    it = g.add(item(), image(0))
    (tmp_path / it.file).unlink()
    with pytest.raises(GalleryError, match="missing") as e:
        read_gallery(tmp_path)
    assert it.file in str(e.value)
    with pytest.raises(GalleryError, match="does not exist"):
        read_gallery(tmp_path / "nope")


# -- write_gallery (the GUI's Save Gallery) --------------------------------------------------
def test_write_gallery_new_then_update(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    write_gallery(folder, MODEL, [(item(unit=u), image(u)) for u in range(3)])
    assert {MANIFEST, CONTACT_SHEET, INDEX} <= set(snapshot(folder))
    write_gallery(folder, MODEL, [(item(unit=1, value=99.0), image(42)), (item(unit=7), image(7))])
    manifest, pairs = read_gallery(folder)
    by_unit = {it.unit: (it, im) for it, im in pairs}
    assert sorted(by_unit) == [0, 1, 2, 7]
    assert by_unit[1][0].value == 99.0 and np.array_equal(by_unit[1][1], image(42))
    pngs = {p.name for p in folder.glob("*.png")} - {CONTACT_SHEET}
    assert pngs == {it.file for it, _ in pairs}  # the superseded PNG was removed
    with pytest.raises(GalleryError, match="different model"):
        write_gallery(folder, OTHER, [(item(), image(0))])


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_write_gallery_failure_keeps_earlier_gallery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """Fail the n-th file write of a save: PNG 1, PNG 2, contact sheet (after the commit), index."""
    folder = tmp_path / "saved"
    write_gallery(folder, MODEL, [(item(unit=u), image(u)) for u in range(2)])
    before = snapshot(folder)
    real_bytes, real_text = gal.atomic_write_bytes, gal.atomic_write_text
    calls = {"n": 0}

    def counted(real):
        def write(path, data):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise OSError(28, "No space left on device")
            return real(path, data)

        return write

    monkeypatch.setattr(gal, "atomic_write_bytes", counted(real_bytes))
    monkeypatch.setattr(gal, "atomic_write_text", counted(real_text))
    monkeypatch.setattr(store, "atomic_write_text", counted(real_text))  # the manifest commit
    # unit 0 replaces an existing item, unit 5 is new; writes: png, png, manifest, sheet, index
    fail_at = {1: 1, 2: 2, 3: 4, 4: 5}[fail_at]
    with pytest.raises(GalleryError, match="No space left"):
        write_gallery(
            folder, MODEL, [(item(unit=0, value=-1.0), image(50)), (item(unit=5), image(5))]
        )
    monkeypatch.undo()
    assert snapshot(folder) == before
    _, pairs = read_gallery(folder)
    assert sorted(it.unit for it, _ in pairs) == [0, 1]


def test_write_gallery_failure_in_new_folder_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fresh"

    def boom(*_a, **_k):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(gal, "contact_sheet_png", boom)
    with pytest.raises(GalleryError, match="Permission denied"):
        write_gallery(folder, MODEL, [(item(), image(0))])
    assert not folder.exists()


# -- shards ----------------------------------------------------------------------------------
def test_shard_writers_do_not_clobber_each_other(tmp_path: Path) -> None:
    a = Gallery.open(tmp_path, MODEL, shard=(0, 2))
    b = Gallery.open(tmp_path, MODEL, shard=(1, 2))
    for u in range(6):  # interleaved, as concurrent processes would
        (a if u % 2 == 0 else b).add(item(unit=u), image(u))
    assert not (tmp_path / MANIFEST).exists()
    a.finalize()
    _, pairs = read_gallery(tmp_path)
    assert sorted(it.unit for it, _ in pairs) == list(range(6))
    resumed = Gallery.open(tmp_path, MODEL, shard=(0, 2))
    assert all(resumed.has("conv1", u) for u in range(6))
    (tmp_path / "conv1_u0099.png").write_bytes(b"orphan")
    merge_gallery(tmp_path)
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert sorted(d["unit"] for d in data["items"]) == list(range(6))
    assert not (tmp_path / "conv1_u0099.png").exists()
    assert (tmp_path / CONTACT_SHEET).is_file()


def test_shards_of_different_models_are_refused(tmp_path: Path) -> None:
    Gallery.open(tmp_path, MODEL, shard=(0, 2)).add(item(), image(0))
    with pytest.raises(GalleryError, match="different model"):
        Gallery.open(tmp_path, OTHER, shard=(1, 2))


@pytest.mark.parametrize(
    "edit",
    [
        {"timestamp": None},
        {"layer": 7},
        {"value": "high"},
        {"unit": "x"},
        "not an object",
    ],
)
def test_hand_edited_manifest_items_are_a_gallery_error_or_tolerated(tmp_path: Path, edit) -> None:
    """A bad field in one item never escapes as a TypeError (e.g. comparing None timestamps)."""
    g = Gallery.open(tmp_path, MODEL)
    g.add(item(unit=0), image(0))
    g.add(item(unit=1), image(1))
    data = json.loads((tmp_path / MANIFEST).read_text())
    if isinstance(edit, dict):
        for it in data["items"]:
            it.update(edit)
    else:
        data["items"][1] = edit
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    try:
        _, pairs = read_gallery(tmp_path)
    except GalleryError as e:
        assert MANIFEST in str(e)
    else:
        assert len(pairs) == 2
        assert all(isinstance(it.timestamp, str) for it, _ in pairs)
        assert all(it.value is None or isinstance(it.value, float) for it, _ in pairs)


def test_items_of_different_jobs_on_one_unit_do_not_replace_each_other(tmp_path: Path) -> None:
    """Two interpolations (or direction files, spectrum rows) touching the same unit are
    different pictures; a unit rendered again still replaces its earlier image."""

    def prov(job_type: str, frames: int) -> dict:
        return {"job": {"type": job_type, "frames": frames}, "settings": {"steps": 8}}

    g = Gallery.open(tmp_path, MODEL)
    a = g.add(
        item("conv1", 3, objective="interpolation", provenance=prov("interpolation", 4)), image(1)
    )
    b = g.add(
        item("conv1", 3, objective="interpolation", provenance=prov("interpolation", 6)), image(2)
    )
    assert len(g) == 2 and a.file != b.file
    g.add(item("conv1", 5, provenance=prov("units", 0)), image(3))
    g.add(item("conv1", 5, provenance=prov("units", 0)), image(4))
    assert len(g) == 3
    _, pairs = read_gallery(tmp_path)
    assert len({it.file for it, _ in pairs}) == 3
    (five,) = [img for it, img in pairs if it.unit == 5]
    assert (five == image(4)).all()


def test_absurdly_nested_manifests_are_corrupt_not_a_crash(tmp_path: Path) -> None:
    from fvdesk.core.output.atlas import merge_atlas

    g = tmp_path / "g"
    g.mkdir()
    (g / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(GalleryError, match="not valid JSON.*nested too deeply"):
        read_gallery(g)
    atlas = tmp_path / "atlas"
    atlas.mkdir()
    (atlas / "atlas.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(GalleryError, match="nested too deeply"):
        merge_atlas(atlas)


def test_sheet_captions_never_need_glyphs_the_font_lacks() -> None:
    font, full = gal.sheet_font()
    assert font is not None
    assert gal.sheet_text("a:1 − 0.5·b:2 L∞ Ø", full=False) == "a:1 - 0.5*b:2 Linf O"
    assert gal.sheet_text("a:1 − b", full=True) == "a:1 − b"
