"""Writers: a :class:`SynthSet` on disk as class folders, split folders or a FER2013-style CSV,
with its ground truth (``truth.csv``) and how it was made (``synth.json``)."""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from ... import storage
from ...errors import DataError
from ...safepaths import is_uri
from .dataset import SynthConfig, SynthSet, share_counts

FER2013_INDEX = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
LAYOUTS = ("folders", "split-folders", "fer2013-csv")
SPLIT_SHARES = (0.8, 0.1, 0.1)
_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def assign_splits(n: int, seed: int, shares: tuple[float, float, float] = SPLIT_SHARES) -> np.ndarray:
    """A seeded random train/val/test assignment (not stratified, copies not kept together)."""
    names = np.repeat(np.array(["train", "val", "test"]), share_counts(n, shares))
    np.random.default_rng([seed, 2]).shuffle(names)
    return names


def _save_pngs(items: list[tuple[Path, np.ndarray]]) -> None:
    def save(item):
        path, arr = item
        Image.fromarray(arr, mode="L").save(path, format="PNG", compress_level=1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(save, items, chunksize=64))


def _write_fer2013(path: Path, synth: SynthSet, splits: np.ndarray) -> None:
    codes = [FER2013_INDEX[c] for c in synth.classes]
    text = [str(i) for i in range(256)]
    with open(path, "w", newline="") as fh:
        fh.write("emotion,pixels,Usage\n")
        for img, label, split in zip(synth.images, synth.labels, splits, strict=True):
            pixels = " ".join(map(text.__getitem__, img.ravel().tolist()))
            fh.write(f"{codes[label]},{pixels},{_USAGE[split]}\n")


def write_folders(
    synth: SynthSet, out_dir: str | os.PathLike, layout: str = "folders", *, overwrite: bool = False
) -> Path | str | os.PathLike:
    """Write ``synth`` to ``out_dir`` in one of LAYOUTS, plus ``truth.csv`` and ``synth.json``.

    Layouts: ``folders`` -> ``<class>/<id>.png`` (class = given label); ``split-folders`` ->
    ``<train|val|test>/<class>/<id>.png`` from a seeded random 80/10/10 assignment (copies may land
    in other splits than their originals: leakage to detect); ``fer2013-csv`` -> ``fer2013.csv``
    with ``emotion,pixels,Usage`` rows in id order. Image files are named ``<id>.png``, or CK+-style
    ``S012_003_00000017.png`` (subject, sequence, frame) when the set has subjects. ``truth.csv`` has
    ``id,file,label,true_label,noisy,dup_of,dup_kind,subject,frame_of`` (class names; noisy 0/1;
    dup_of and frame_of an id or empty; for the CSV layout file is ``fer2013.csv#<row>`` with row
    counted from 0 after the header).

    The set is built in a temporary folder beside ``out_dir`` and renamed into place
    (``fer_core.storage.folder_writer``: a local folder or a storage URI). An existing non-empty
    ``out_dir`` is an error unless
    ``overwrite`` is true and it is an earlier synthetic set. Returns ``out_dir`` (a local one resolved to
    a ``Path``, a storage URI as given).
    """
    if layout not in LAYOUTS:
        raise DataError(f"synth: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    out = out_dir if is_uri(out_dir) else Path(out_dir).resolve()
    config = synth.config or SynthConfig(n=len(synth), size=synth.images.shape[1], classes=synth.classes)
    ids = synth.ids()
    splits = assign_splits(len(synth), config.seed)
    # --overwrite replaces an earlier synthetic set (it holds synth.json), nothing else.
    with storage.folder_writer(
        out, overwrite=overwrite, kind="synthetic face set", markers=("synth.json",), last=("synth.json",)
    ) as tmp:
        os.chmod(tmp, 0o755)
        files = _write_images(tmp, synth, layout, ids, splits)
        _write_truth(tmp / "truth.csv", synth, ids, files)
        meta = _meta(synth, config, layout, splits)
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _write_images(folder: Path, synth: SynthSet, layout: str, ids: list[str], splits: np.ndarray) -> list[str]:
    """Write the images in ``layout``; returns where each one went (truth.csv's ``file`` column)."""
    if layout == "fer2013-csv":
        if synth.images.shape[1:] != (48, 48):
            raise DataError(
                f"synth: fer2013-csv holds 48x48 images, these are {synth.images.shape[1]}x{synth.images.shape[2]}"
            )
        _write_fer2013(folder / "fer2013.csv", synth, splits)
        return [f"fer2013.csv#{i}" for i in range(len(synth))]
    prefix = [f"{s}/" for s in splits] if layout == "split-folders" else [""] * len(synth)
    stems = synth.stems()
    files = [f"{pre}{synth.classes[lab]}/{i}.png" for pre, lab, i in zip(prefix, synth.labels, stems, strict=True)]
    for sub in sorted({f.rsplit("/", 1)[0] for f in files}):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    _save_pngs([(folder / f, img) for f, img in zip(files, synth.images, strict=True)])
    return files


def _write_truth(path: Path, synth: SynthSet, ids: list[str], files: list[str]) -> None:
    """truth.csv: per image its file, given and true label, whether it is noisy, and what it is a copy of."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "file", "label", "true_label", "noisy", "dup_of", "dup_kind", "subject", "frame_of"])
        noisy = synth.noisy
        subjects = synth.subjects
        for i in range(len(synth)):
            d = int(synth.dup_of[i])
            f = int(subjects.frame_of[i]) if subjects is not None else -1
            writer.writerow(
                [
                    ids[i],
                    files[i],
                    synth.classes[synth.labels[i]],
                    synth.classes[synth.true_labels[i]],
                    int(noisy[i]),
                    ids[d] if d >= 0 else "",
                    synth.dup_kind[i],
                    f"S{subjects.subject[i]:03d}" if subjects is not None else "",
                    ids[f] if f >= 0 else "",
                ]
            )


def _meta(synth: SynthSet, config: SynthConfig, layout: str, splits: np.ndarray) -> dict:
    """synth.json: the generator, the layout, the config and the counts of injected problems."""
    meta = {
        "generator": "fer_core.data.synth",
        "layout": layout,
        "config": asdict(config),
        "counts": {
            "images": len(synth),
            "noisy": int(synth.noisy.sum()),
            "exact": int((synth.dup_kind == "exact").sum()),
            "near": int((synth.dup_kind == "near").sum()),
            "conflicts": int(synth.conflict.sum()),
        },
    }
    if synth.subjects is not None:
        counts = meta["counts"]
        assert isinstance(counts, dict)
        counts["subjects"] = int(len(np.unique(synth.subjects.subject)))
        counts["later_frames"] = int((synth.subjects.frame_of >= 0).sum())
    if layout != "folders":
        meta["splits"] = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    return meta
