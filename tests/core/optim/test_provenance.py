"""The typed provenance record and the gallery's one duplicate-key rule.

Galleries on disk keep opening: a manifest written by an earlier fvdesk round-trips through the
record to the same JSON, keys and all (so item keys, file names and ``render --from`` stay as
they were)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fvdesk.core.errors import ConfigError
from fvdesk.core.jobs.job import Job, UnitJob, job_from_provenance, recorded_spec
from fvdesk.core.optim.provenance import Provenance
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.output.gallery import (
    MANIFEST,
    Gallery,
    GalleryItem,
    ModelInfo,
    read_gallery,
    write_gallery,
)

SHA = "c" * 64
MODEL = ModelInfo("net.onnx", SHA)

#: An item as fvdesk 0.2-0.4 wrote it (a full record, plus a key a newer fvdesk might add).
OLD_RECORD = {
    "format": "fvdesk-provenance",
    "version": 1,
    "model": {"file": "net.onnx", "sha256": SHA, "path": "/models/net.onnx"},
    "job": {"type": "interpolation", "a": [{"layer": "conv1", "unit": 1, "kind": "channel",
            "weight": 1.0, "x": None, "y": None}], "b": [{"layer": "conv1", "unit": 2,
            "kind": "channel", "weight": 1.0, "x": None, "y": None}], "frames": 3,
            "alignment_weight": 0.3, "alignment_layer": None, "shared": True},
    "slot": 1,
    "unit": -1,
    "facet": 1,
    "batch": [0, 1, 2],
    "seed": 4,
    "settings": {"steps": 8, "size": 16, "seed": 4},
    "preprocessing": {"preset": "unit", "lo": 0.0, "hi": 1.0, "mean": [0, 0, 0],
                      "std": [1, 1, 1], "bgr": False, "source": "metadata"},
    "device": "CPU",
    "fvdesk_version": "0.4.0",
    "future_key": {"kept": True},
}  # fmt: skip


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def old_gallery(folder: Path) -> dict:
    """A gallery folder as an earlier fvdesk left it: a version-2 item and a version-1 one."""
    from fvdesk.core.output.gallery import encode_png

    folder.mkdir()
    items = [
        {"file": "conv1_all_interpolation_f1.png", "layer": "conv1", "unit": -1, "facet": 1,
         "label": "conv1:1 → conv1:2", "caption": "t=0.50", "objective": "interpolation",
         "negative": False, "value": 0.5, "dead": False, "seed": 4, "steps": 8,
         "provenance": OLD_RECORD, "timestamp": "2025-01-01T00:00:00.000+00:00",
         "device": "CPU", "seconds": 0.1},
        {"file": "conv1_u0003.png", "layer": "conv1", "unit": 3, "facet": 0, "label": None,
         "objective": "channel", "negative": False, "value": 1.0, "dead": False, "seed": 0,
         "steps": 8, "settings": {"steps": 8, "size": 16, "seed": 0},
         "timestamp": "2024-01-01T00:00:00.000+00:00", "device": "CPU"},
    ]  # fmt: skip
    for n, it in enumerate(items):
        (folder / it["file"]).write_bytes(encode_png(image(n)))
    manifest = {"format": "fvdesk-gallery", "version": 2, "fvdesk_version": "0.4.0",
                "title": "old", "model": MODEL.to_dict(), "device": "CPU",
                "created": "2024-01-01", "updated": "2025-01-01", "items": items}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_an_old_gallery_opens_typed_and_is_written_back_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    old_gallery(folder)
    _, pairs = read_gallery(folder)
    (v2, _), (v1, _) = sorted(pairs, key=lambda p: p[0].unit)  # unit -1, then unit 3
    rec = v2.provenance
    assert (
        isinstance(rec, Provenance) and rec.complete and recorded_spec(rec).type == "interpolation"
    )
    assert (rec.slot, rec.batch, rec.seed, rec.device) == (1, (0, 1, 2), 4, "CPU")
    assert rec.to_dict() == OLD_RECORD  # every key, the unknown one too
    assert rec["job"]["frames"] == 3 and "future_key" in rec  # read like the dict it was
    assert not v1.provenance.complete and v1.settings == {"steps": 8, "size": 16, "seed": 0}
    with pytest.raises(ConfigError):
        recorded_spec(v1.provenance)  # a version-1 item names no job
    # the item key (and so the PNG names) hash the record exactly as before
    what = {k: OLD_RECORD[k] for k in ("job", "settings", "preprocessing")}
    old_hash = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    assert v2.key[-1] == old_hash and v1.key[-1] == ""
    rep = job_from_provenance(rec, where="item 1")
    assert rep.slot == 1 and rep.batch == (0, 1, 2) and rep.job.preprocessing.source == "metadata"
    # written again (the app's Save Gallery into a new folder): the same JSON per item
    write_gallery(tmp_path / "again", MODEL, [(it, img) for it, img in pairs])
    again = json.loads((tmp_path / "again" / MANIFEST).read_text())["items"]
    by_unit = {d["unit"]: d for d in again}
    assert by_unit[-1]["provenance"] == OLD_RECORD
    assert by_unit[3]["provenance"] == {"settings": {"steps": 8, "size": 16, "seed": 0}}


def test_a_job_writes_a_typed_record_and_reads_it_back() -> None:
    from fvdesk.core.jobs.job import ModelRef
    from fvdesk.core.model.preprocessing import preset

    job = Job(UnitJob("conv1", (2, 5), facets=2), RenderSettings(steps=3, seed=9),
              preset("unit", source="user"), ModelRef("net.onnx", SHA, "/m/net.onnx"))  # fmt: skip
    slot = job.spec.slots()[3]
    rec = job.provenance(slot, [2, 3], device="CPU")
    assert isinstance(rec, Provenance) and rec.complete
    assert (rec.slot, rec.unit, rec.facet, rec.batch, rec.seed) == (3, 5, 1, (2, 3), 9)
    d = rec.to_dict()
    assert list(d)[:4] == ["format", "version", "model", "job"] and d["batch"] == [2, 3]
    assert Provenance.of(json.loads(json.dumps(d))) == rec  # through JSON and back
    rep = job_from_provenance(d)
    assert rep.job.spec == job.spec and rep.job.settings == job.settings and rep.batch == (2, 3)


def test_a_damaged_record_reads_as_incomplete_and_reproduces_with_one_sentence() -> None:
    rec = Provenance.of({**OLD_RECORD, "slot": "x", "batch": "no", "job": 7})
    assert rec.slot is None and rec.batch is None and rec.job is None and not rec.complete
    with pytest.raises(ConfigError, match="item 4 has a damaged provenance record"):
        job_from_provenance(rec, where="item 4")
    assert Provenance.of(None).to_dict() == {} and not Provenance.of("junk").complete


# -- the one duplicate-key rule ----------------------------------------------------------------
def unit_item(facet: int = 0, value: float = 1.0) -> GalleryItem:
    return GalleryItem("conv1", 3, facet=facet, value=value,
                       provenance={"settings": {"steps": 8}})  # fmt: skip


def test_one_save_keeps_every_image_a_later_save_replaces(tmp_path: Path) -> None:
    g = Gallery.open(tmp_path / "g", MODEL)
    g.add_many([(unit_item(0, 1.0), image(0)), (unit_item(1, 2.0), image(1))])
    # two images of one key in one save: both kept, the second on the next free facet (2)
    got = g.add_many([(unit_item(0, 3.0), image(2)), (unit_item(0, 4.0), image(3))])
    assert [it.facet for it in got] == [0, 2]
    values = {it.facet: it.value for it in g.items}
    assert values == {0: 3.0, 1: 2.0, 2: 4.0}  # facet 0 replaced, facet 1 untouched
    g.add(unit_item(0, 5.0), image(4))  # saved again later: replaces
    assert {it.facet: it.value for it in g.items} == {0: 5.0, 1: 2.0, 2: 4.0}
    # the app's writer follows the same rule
    folder = tmp_path / "w"
    write_gallery(folder, MODEL, [(unit_item(0, 1.0), image(0)), (unit_item(1, 2.0), image(1))])
    write_gallery(folder, MODEL, [(unit_item(0, 3.0), image(2)), (unit_item(0, 4.0), image(3))])
    _, pairs = read_gallery(folder)
    assert {it.facet: it.value for it, _ in pairs} == {0: 3.0, 1: 2.0, 2: 4.0}
    assert len({it.file for it, _ in pairs}) == 3
