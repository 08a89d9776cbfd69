"""``fer predict MODEL IMAGES...``: classify image files with a model ``fer retrain`` exported (ONNX).

Each image is prepared as ``fer data ingest`` prepares its images (any size and mode in: EXIF
orientation, the model's color mode, 16-bit to 8-bit, resized to the model's input size), then run
through ONNX Runtime; the output is class probabilities (softmax of the logits) in the model's class
order. Folders are expanded to the image files inside (sorted, not recursive). Files that are not
images are reported, one line each, and the others are still classified.

    >>> rows = predict("runs/retrain/reg1", ["face1.png", "faces/"])
    >>> rows[0]["label"], rows[0]["confidence"], rows[0]["probs"]["happy"]
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from fer_core.errors import FerError

__all__ = ["predict", "expand_images", "write_predictions", "format_predictions"]

GENERATOR = "fer predict"


def expand_images(inputs: list[str]) -> list[str]:
    """Files as given; folders as the image files directly inside them, sorted."""
    from fer_core.data.images import is_image_name

    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and is_image_name(f))
            if not found:
                raise FerError(f"{p}: a folder without image files ({', '.join(sorted(_suffixes()))})")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            raise FerError(f"{p}: no such file or folder; pass image files or folders of them")
    return out


def _named_in_utf8(files: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the files whose names are valid UTF-8, (file, reason) for each other one, its name printed escaped).

    A name that is not (a Latin-1 'café.png' from a zip made on Windows) could be neither printed
    nor written to --out, so such a file is skipped, as a file that is not an image is.
    """
    from fer_core.data.readers.base import NOT_UTF8, is_utf8, shown

    kept = [f for f in files if is_utf8(f)]
    return kept, [(shown(f), NOT_UTF8) for f in files if not is_utf8(f)]


def _suffixes() -> set[str]:
    from fer_core.data.images import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def predict(model_path: str | os.PathLike, inputs: list[str]) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """(one row per classified image, (file, reason) per image that could not be read, the model's info)."""
    from fer_core.data.images import decode_files

    from .model_export import load_onnx

    model = load_onnx(model_path)
    files, failures = _named_in_utf8(expand_images(inputs))
    decoded = decode_files(files, model.size, model.color, progress=False)
    failures += [(files[i], reason) for i, reason in decoded.failures]
    rows: list[dict] = []
    if len(decoded.ok):
        logits = model.logits(decoded.images).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        for i, p in zip(decoded.ok, probs, strict=False):
            k = int(p.argmax())
            rows.append(
                {
                    "file": files[int(i)],
                    "label": model.classes[k],
                    "confidence": float(p[k]),
                    "probs": {c: float(v) for c, v in zip(model.classes, p, strict=False)},
                }
            )
    return rows, failures, model.info


def format_predictions(rows: list[dict], top: int = 3) -> str:
    """One line per image: file, label, confidence, then the next most likely classes."""
    width = max((len(r["file"]) for r in rows), default=4)
    lines = []
    for r in rows:
        ranked = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:top]
        lines.append(
            f"{r['file']:<{width}}  {r['label']:<10} {r['confidence']:.3f}   "
            + "  ".join(f"{c} {p:.3f}" for c, p in ranked)
        )
    return "\n".join(lines)


def write_predictions(path: str | os.PathLike, rows: list[dict], classes: list[str]) -> Path:
    """``.csv`` (file, label, confidence, one column per class) or ``.json``, written atomically; an
    existing file is replaced only when ``fer predict`` wrote it."""
    from fer_core.atomic import write_text
    from fer_core.safepaths import check_file_replaceable

    path = Path(path)
    if path.suffix.lower() not in (".csv", ".json"):
        raise FerError(f"--out {path}: give a .csv or .json file name")
    check_file_replaceable(path, is_ours=_is_ours, what="a predictions file")
    if path.suffix.lower() == ".json":
        text = json.dumps({"generator": GENERATOR, "classes": classes, "predictions": rows}, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "label", "confidence", *[f"p_{c}" for c in classes]])
        for r in rows:
            writer.writerow(
                [r["file"], r["label"], f"{r['confidence']:.6f}", *[f"{r['probs'][c]:.6f}" for c in classes]]
            )
        text = buf.getvalue()
    return write_text(path, text)


def _is_ours(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return json.loads(path.read_text(encoding="utf-8")).get("generator") == GENERATOR
    with open(path, encoding="utf-8") as f:
        return f.readline().startswith("file,label,confidence,p_")
