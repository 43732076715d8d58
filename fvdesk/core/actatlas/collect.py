"""Activation vectors of one layer at sampled positions of every image of a folder.

Images are read as the dataset pass reads them (``imagefolder.scan_folder``, decoded a batch ahead
on threads by ``passes.decoded_batches``, fitted to the model input by resize + centre crop) and
run through the model truncated after the layer, without gradients.  Each image contributes
``per`` positions of the layer's grid, drawn without replacement by a generator seeded with the
atlas's seed and a hash of the image's relative path, so the draw of an image never depends on
which other images the folder holds.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from fvdesk.core.dataset.prepared import PreparedKeeper
from fvdesk.core.errors import DatasetError
from fvdesk.core.imagefolder import scan_folder
from fvdesk.core.jobs.passes import decoded_batches
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim.events import Event, NoticeEvent, ProgressEvent

BATCH = 32


@dataclass
class Collection:
    """The vectors (N, C) float32 and where each came from: image index into ``rels``, grid
    row/column; ``sizes`` are the source images' (width, height)."""

    vectors: np.ndarray
    image: np.ndarray
    gy: np.ndarray
    gx: np.ndarray
    rels: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    per_image: int = 0  # positions actually drawn per image (after the memory cap)
    cancelled: bool = False


def positions(seed: int, rel: str, cells: int, k: int) -> np.ndarray:
    """``k`` distinct flat grid positions of one image (seeded by the atlas seed and its path)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(rel.encode("utf-8"))])
    return np.sort(rng.choice(cells, size=min(k, cells), replace=False))


def per_image_cap(images: int, per_image: int, channels: int, max_vectors: int,
                  max_bytes: int) -> int:  # fmt: skip
    """Positions per image so that the vectors fit ``max_vectors`` (or ``max_bytes``)."""
    cap = max_vectors or max(1, max_bytes // (4 * max(channels, 1)))
    return max(1, min(per_image, cap // max(images, 1)))


def collect(model: LoadedModel, root: str | Path, layer: str, *, per_image: int, seed: int,
            max_vectors: int, max_bytes: int, pre: Preprocessing, device: torch.device,
            cancelled: Callable[[], bool]) -> Generator[Event, None, Collection]:  # fmt: skip
    """Yields ``ProgressEvent``s per batch; returns the ``Collection`` (a cancel keeps what ran)."""
    root = Path(root)
    scan = scan_folder(root)
    if not scan.images:
        raise DatasetError(f"The folder {root} holds no images.")
    lay = model.graph[layer]
    gh, gw = lay.spatial  # type: ignore[misc]  # ActivationAtlasJob.validate admits only spatial layers
    per = per_image_cap(len(scan.images), per_image, lay.channels, max_vectors, max_bytes)
    if per < per_image:
        yield NoticeEvent(
            f"{len(scan.images):,} images: {per} positions per image (not {per_image}) keep the "
            "vectors within the memory cap."
        )
    if model.device != device:
        model.to(device)
    ext = model.extractor([layer])
    size = (int(model.input.height), int(model.input.width))
    vecs: list[np.ndarray] = []
    img: list[np.ndarray] = []
    pos: list[np.ndarray] = []
    rels: list[str] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[tuple[str, str]] = []
    total = len(scan.images)
    done = 0
    stopped = False
    yield ProgressEvent(0, total, "images", f"{total:,} images; {per} positions each")
    keep = PreparedKeeper.open(scan, size)
    batches = decoded_batches(scan, range(total), size, BATCH,
                              prepared=None if keep is None else keep.source())  # fmt: skip
    try:
        for ids, results in batches:
            if keep is not None:
                keep.add(scan, ids, results)
            good = [k for k, r in enumerate(results) if r[0] == "ok"]
            for k, r in enumerate(results):
                if r[0] != "ok":
                    skipped.append((scan.images[ids[k]].rel, str(r[1])))
            if good:
                pixels = np.stack([results[k][1] for k in good])
                with torch.inference_mode():
                    x01 = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float() / 255.0
                    act = ext(model.prepare_input(x01, pre))[layer].float()
                    flat = act.flatten(2).transpose(1, 2).cpu().numpy()  # (B, H*W, C)
                for j, k in enumerate(good):
                    rel = scan.images[ids[k]].rel
                    p = positions(seed, rel, gh * gw, per)
                    vecs.append(flat[j, p].astype(np.float32))
                    img.append(np.full(len(p), len(rels), np.int32))
                    pos.append(p)
                    rels.append(rel)
                    sizes.append(cast(tuple[int, int], tuple(int(v) for v in results[k][2])))
            done += len(ids)
            yield ProgressEvent(done, total, "images")
            if cancelled():
                stopped = True
                break
    finally:
        batches.close()
        if keep is not None:
            keep.commit(scan)
    if not vecs:
        raise DatasetError(f"None of the {total:,} image files in {root} can be read.")
    p = np.concatenate(pos)
    return Collection(
        vectors=np.concatenate(vecs), image=np.concatenate(img),
        gy=(p // gw).astype(np.int32), gx=(p % gw).astype(np.int32),
        rels=rels, sizes=sizes, skipped=skipped, per_image=per, cancelled=stopped,
    )  # fmt: skip
