"""Data-layer safety: edited manifests and shards are refused, sources cannot reach outside their
folder, 16-bit images keep their contrast, emptied classes leave the class list, unreadable CSVs
and absurd options give one-line errors, and unmatched relabel ids are listed."""

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import face, save
from fer_cli.main import main
from fer_core.data.images import decode_file, decode_files, from_pil
from fer_core.data.ingest import IngestOptions, ingest
from fer_core.data.loader import load_split
from fer_core.data.readers import read_source
from fer_core.data.split import parse_ratios
from fer_core.errors import DataError, ManifestError


def _fer(*args: str) -> subprocess.CompletedProcess:
    """The real ``fer`` command in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fer_cli", *args], capture_output=True, text=True)


def _one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and exactly one stderr line 'fer: error: ...' holding every fragment."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("fer: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _copy(ingested, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ingested, copy)
    return copy


def _edit_manifest(folder, edit) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m, indent=2))
    return m


# 1. The data version is recomputed; `fer data report` checks the shards.


def test_swapped_class_names_are_refused_even_with_the_version_pin(ingested, tmp_path):
    from fer_core.train import load_train_data

    copy = _copy(ingested, tmp_path)
    m = _edit_manifest(copy, lambda m: m["classes"].__setitem__(slice(0, 2), m["classes"][1::-1]))
    version = m["version"]  # unchanged: the edit keeps the old version
    for load in (lambda **k: load_split(str(copy), "train", **k), lambda **k: load_train_data(str(copy), **k)):
        for pin in ({}, {"expected_version": version}):
            with pytest.raises(
                ManifestError,
                match=r"manifest\.json: classes, image shape or shard list .* "
                r"edited or is corrupt: re-run 'fer data ingest'",
            ):
                load(**pin)


def test_shard_path_leaving_the_data_set_folder_is_refused(ingested, tmp_path):
    copy = _copy(ingested, tmp_path)
    _edit_manifest(copy, lambda m: m["shards"][0].__setitem__("path", "../elsewhere/train-00000.parquet"))
    with pytest.raises(ManifestError, match=r"shard entry 0 path '\.\./elsewhere/train-00000\.parquet' leaves"):
        load_split(str(copy), "train")


@pytest.mark.slow
@pytest.mark.e2e
def test_report_checks_shard_checksums(ingested, tmp_path, capsys):
    copy = _copy(ingested, tmp_path)
    shard = next(copy.glob("test-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    _one_line_error(_fer("data", "report", str(copy)), f"{shard.name}: checksum mismatch")
    assert main(["data", "report", str(copy), "--no-verify"]) == 0  # the user can still look at it
    assert "shards not checked" in capsys.readouterr().out
    assert main(["data", "report", str(ingested)]) == 0
    assert "checked 3 shards against the manifest: checksums, rows and counts match" in capsys.readouterr().out


def test_report_checks_counts_against_the_shards(ingested, tmp_path, capsys):
    copy = _copy(ingested, tmp_path)
    cls = json.loads((copy / "manifest.json").read_text())["classes"][0]
    _edit_manifest(copy, lambda m: m["counts"]["val"].__setitem__(cls, m["counts"]["val"][cls] + 5))
    assert main(["data", "report", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fer: error:") and "\n" not in err
    assert "manifest.json: counts say" in err and f"val images of '{cls}'" in err


# 2. Readers stay inside their source.


def test_rafdb_list_cannot_reach_outside_the_source(tmp_path):
    root = tmp_path / "data" / "RAF"
    outside = save(tmp_path / "outside.png", face(90))
    linked = save(tmp_path / "linked.jpg", face(91), "JPEG")
    aligned = root / "Image" / "aligned"
    for k in range(20):
        save(aligned / f"train_{k:05d}_aligned.jpg", face(k), "JPEG")
    for k in range(4):
        save(aligned / f"test_{k:04d}_aligned.jpg", face(50 + k), "JPEG")
    os.symlink(linked, aligned / "train_00100_aligned.jpg")
    lines = [f"train_{k:05d}.jpg {4 + k % 2}" for k in range(20)] + [f"test_{k:04d}.jpg {4 + k % 2}" for k in range(4)]
    lines += ["../../outside.png 4", f"{outside} 5", "train_00100.jpg 4"]
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")

    src = read_source(root)
    assert len(src) == 24 and not [i for i in src.ids if ".." in i or "outside" in i or "00100" in i]
    reasons = {s.item: s.reason for s in src.skipped}
    assert reasons == {
        "list_patition_label.txt line 25": "path escapes the source folder: '../../outside.png'",
        "list_patition_label.txt line 26": f"path escapes the source folder: '{outside}'",
        "list_patition_label.txt line 27": "path escapes the source folder: 'train_00100.jpg'",
    }
    m = ingest(IngestOptions(src=str(root), out=str(tmp_path / "out"), split="keep", mislabels=False, quiet=True))
    assert m["total"] == 24
    with open(tmp_path / "out" / "report" / "skipped.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["item"] for r in rows] == [f"list_patition_label.txt line {k}" for k in (25, 26, 27)]
    assert all(r["reason"].startswith("path escapes the source folder") for r in rows)


def test_class_folder_symlink_to_outside_is_skipped(tmp_path):
    root = tmp_path / "src"
    save(root / "happy" / "a.png", face(1))
    save(root / "sad" / "b.png", face(2))
    outside = save(tmp_path / "secret.png", face(3))
    os.symlink(outside, root / "sad" / "link.png")
    os.symlink(root / "happy" / "a.png", root / "sad" / "inside.png")  # a link within the source is fine
    src = read_source(root)
    assert sorted(src.ids) == ["src:happy/a.png", "src:sad/b.png", "src:sad/inside.png"]
    assert [(s.item, s.reason) for s in src.skipped] == [
        ("sad/link.png", f"path escapes the source folder (links to {os.path.realpath(outside)})")
    ]


# 3. Images of more than 8 bits are scaled, not clipped.


def test_16bit_png_is_scaled_to_8_bits(tmp_path):
    arr = np.linspace(0, 65535, 48 * 48).round().astype(np.uint16).reshape(48, 48)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # a real 16-bit PNG
    out = decode_file(path, 48, "grayscale")[:, :, 0].astype(int)
    assert np.abs(out - arr / 257).max() <= 1
    assert out.min() == 0 and out.max() == 255 and (out < 255).mean() > 0.9
    rgb = decode_file(path, 48, "rgb")
    assert (rgb[:, :, 0] == rgb[:, :, 2]).all() and np.abs(rgb[:, :, 1] - arr / 257).max() <= 1


def test_32bit_and_float_images_follow_their_value_range(tmp_path):
    grad = np.linspace(0, 1, 48 * 48).reshape(48, 48)
    as_8bit = from_pil(Image.fromarray((grad * 255).round().astype(np.int32)), 48, "grayscale")[:, :, 0]
    assert np.abs(as_8bit - grad * 255).max() <= 0.5  # 0..255 kept
    as_16bit = from_pil(Image.fromarray((grad * 65535).astype(np.int32)), 48, "grayscale")[:, :, 0]
    assert np.abs(as_16bit - grad * 255).max() <= 1  # 0..65535 scaled
    unit = from_pil(Image.fromarray(grad.astype(np.float32)), 48, "grayscale")[:, :, 0]
    assert np.abs(unit - grad * 255).max() <= 1  # float 0..1 scaled
    # a 32-bit TIFF beyond 16 bits has no agreed scale: skipped with a reason
    Image.fromarray((grad * 100000).astype(np.int32)).save(tmp_path / "wide.tif")
    decoded = decode_files([tmp_path / "wide.tif"], 48, "grayscale")
    assert len(decoded.ok) == 0 and "outside 0..65535" in decoded.failures[0][1]


# 4. A class emptied by deduplication leaves the class list.


def _copies_tree(root, copies_of_happy: str):
    """happy and sad faces, and a third class made only of exact copies of happy faces (each of which
    has a second happy copy, so the majority label of every group is happy)."""
    for k in range(30):
        save(root / "happy" / f"h{k}.png", face(k))
        save(root / "sad" / f"s{k}.png", face(100 + k))
    for k in range(10):
        save(root / "happy" / f"h{k}-again.png", face(k))
        save(root / copies_of_happy / f"c{k}.png", face(k))


def test_class_emptied_by_dedup_is_dropped(tmp_path, capsys):
    from fer_core.train import load_train_data

    _copies_tree(tmp_path / "src", "angry")
    out = tmp_path / "out"
    m = ingest(IngestOptions(src=str(tmp_path / "src"), out=str(out), mislabels=False))
    assert "angry: no images left after removing duplicates; dropped from the class list" in capsys.readouterr().err
    assert m["classes"] == ["happy", "sad"]
    assert m["quality"]["classes_emptied_by_dedup"] == ["angry"]
    assert all(list(m["counts"][s]) == ["happy", "sad"] for s in ("train", "val", "test"))
    assert list(m["class_weights"]) == ["happy", "sad"]
    assert sum(sum(c.values()) for c in m["counts"].values()) == m["total"] == 60
    data = load_train_data(str(out))
    assert data.classes == ["happy", "sad"]
    assert data.counts("train") == [m["counts"]["train"]["happy"], m["counts"]["train"]["sad"]]
    assert (
        "dropped class(es) with no images left after removing duplicates: angry"
        in (out / "report" / "report.txt").read_text()
    )
    with open(out / "report" / "duplicates.csv") as fh:
        dups = list(csv.DictReader(fh))
    assert sorted({r["label"] for r in dups}) == ["angry", "happy"]  # labels named before the drop
    assert all(r["action"] != "kept" for r in dups if r["label"] == "angry")


def test_one_class_left_after_dedup_is_an_error(tmp_path):
    root = tmp_path / "src"
    for k in range(10):
        save(root / "happy" / f"h{k}.png", face(k))
        save(root / "happy" / f"h{k}-again.png", face(k))
        save(root / "sad" / f"s{k}.png", face(k))
    with pytest.raises(
        DataError,
        match=r"only class\(es\) happy keep images \(sad lost all of theirs\); "
        "need at least two classes",
    ):
        ingest(IngestOptions(src=str(root), out=str(tmp_path / "out"), mislabels=False, quiet=True))
    assert not (tmp_path / "out").exists()


def test_class_without_train_images_is_an_error(tmp_path):
    root = tmp_path / "src"
    for k in range(12):
        save(root / "train" / "happy" / f"h{k}.png", face(k))
        save(root / "train" / "sad" / f"s{k}.png", face(100 + k))
    for k in range(3):
        save(root / "val" / "happy" / f"h{k}.png", face(200 + k))
        save(root / "val" / "sad" / f"s{k}.png", face(300 + k))
        save(root / "test" / "angry" / f"a{k}.png", face(400 + k))
    with pytest.raises(
        DataError,
        match=r"class\(es\) angry have images only in val/test, none in train.*"
        "--split 80/10/10",
    ):
        ingest(IngestOptions(src=str(root), out=str(tmp_path / "out"), split="keep", mislabels=False, quiet=True))


# 5. Unreadable CSVs and absurd options: one line, no traceback.


def _fer2013_text(bad_row: str | None = None, after: int = 2, n: int = 24) -> str:
    """n rows of two classes; ``bad_row`` goes on line ``after + 2`` (the header is line 1)."""
    rows = ["emotion,pixels,Usage"]
    for k in range(n):
        if bad_row is not None and k == after:
            rows.append(bad_row)
        rows.append(f"{3 + k % 2},{' '.join(map(str, face(k).ravel()))},Training")
    return "\n".join(rows) + "\n"


def _zip_bytes(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, text)
    return buf.getvalue()


@pytest.mark.parametrize(
    "case, content, fragments",
    [
        ("gzip", gzip.compress(_fer2013_text().encode()), ["FER2013 CSV is gzip-compressed", "decompress it first"]),
        ("zip", _zip_bytes("fer2013.csv", _fer2013_text()), ["FER2013 CSV is a zip archive", "unzip fer2013.csv"]),
        (
            "latin-1",
            _fer2013_text(bad_row="3,1 2 3,Entraînement").encode("latin-1"),
            ["line 4: FER2013 CSV is not UTF-8 text", "save it as UTF-8"],
        ),
        (
            "huge field",
            _fer2013_text(bad_row="3," + "1 " * 70000 + ",Training").encode(),
            ["line 4: malformed CSV (field larger than field limit", "check the quoting"],
        ),
        # near the end, so the quote swallows only the last two rows (fewer bytes than the field limit)
        (
            "unterminated quote",
            _fer2013_text(bad_row='3,"1 2 3,Training', after=22).encode(),
            ["line 24: a quoted field runs over 3 lines (an unterminated quote?)"],
        ),
    ],
)
@pytest.mark.slow
@pytest.mark.e2e
def test_unreadable_fer2013_csv_is_one_line(tmp_path, case, content, fragments):
    path = tmp_path / "fer2013.csv"
    path.write_bytes(content)
    _one_line_error(
        _fer("data", "ingest", str(path), "--out", str(tmp_path / "out"), "--quiet", "--no-mislabels"),
        str(path),
        *fragments,
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case, content, fragments",
    [
        ("gzip", gzip.compress(b"id,new_label\nraw:happy/a.png,sad\n"), ["relabels file is gzip-compressed"]),
        (
            "cp1252",
            "id,new_label\nraw:happy/a.png,sad\nraw:happy/é.png,drop\n".encode("cp1252"),
            ["line 3: relabels file is not UTF-8 text", "save it as UTF-8"],
        ),
        (
            "unterminated quote",
            b'id,new_label\n"raw:happy/a.png,sad\nraw:happy/b.png,drop\n',
            ["line 2: a quoted field runs over 2 lines (an unterminated quote?)"],
        ),
    ],
)
@pytest.mark.slow
@pytest.mark.e2e
def test_unreadable_relabels_csv_is_one_line(tmp_path, synth_dir, case, content, fragments):
    path = tmp_path / "relabels.csv"
    path.write_bytes(content)
    _one_line_error(
        _fer(
            "data",
            "ingest",
            str(synth_dir),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--no-mislabels",
            "--relabels",
            str(path),
        ),
        str(path),
        *fragments,
    )


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("size", ["100000", "0"])
def test_absurd_size_is_refused_up_front(tmp_path, synth_dir, size):
    _one_line_error(
        _fer("data", "ingest", str(synth_dir), "--out", str(tmp_path / "out"), "--size", size),
        f"--size: expected 8..512 pixels, got {size}",
    )


# 6. Split ratios must add up.


@pytest.mark.slow
@pytest.mark.e2e
def test_split_ratios_must_sum_to_100_or_1(tmp_path):
    assert parse_ratios("33.3/33.3/33.4") == pytest.approx((0.333, 0.333, 0.334))
    assert parse_ratios("0.7/0.2/0.1") == pytest.approx((0.7, 0.2, 0.1))
    for bad in ("50/50/50", "80/10/5", "0.5/0.2/0.2", "inf/1/1"):
        with pytest.raises(DataError, match="--split"):
            parse_ratios(bad)
    _one_line_error(
        _fer("data", "ingest", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--split", "50/50/50"),
        "--split: ratios '50/50/50' sum to 150; they must sum to 100",
    )


# 7. Unmatched relabel ids are listed.


def test_unmatched_relabel_ids_are_listed(tmp_path, capsys):
    root = tmp_path / "src"
    for k in range(20):
        save(root / "happy" / f"h{k}.png", face(k))
        save(root / "sad" / f"s{k}.png", face(100 + k))
    wrong = [f"other:happy/h{k}.png" for k in range(120)]  # e.g. ids of another --name
    relabels = tmp_path / "relabels.csv"
    relabels.write_text("id,new_label\nsrc:happy/h0.png,sad\n" + "".join(f"{i},drop\n" for i in wrong))
    out = tmp_path / "out"
    assert main(["data", "ingest", str(root), "--out", str(out), "--no-mislabels", "--relabels", str(relabels)]) == 0
    err = capsys.readouterr().err
    assert f"--relabels: 120 id(s) match no image: {', '.join(wrong[:10])} and 110 more" in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["quality"]["relabels"] == {"relabelled": 1, "unmatched": 120, "unmatched_ids": wrong[:100]}
    with open(out / "report" / "relabels_unmatched.csv") as fh:
        assert [(r["id"], r["new_label"]) for r in csv.DictReader(fh)] == [(i, "drop") for i in wrong]
    assert main(["data", "report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "relabels applied: 1 relabelled, 0 dropped, 120 ids matched no image" in text
    assert f"unmatched: {', '.join(wrong[:10])} and 110 more" in text


# 8. A file name that is not valid UTF-8 (a Latin-1 'café.png' from a Windows zip) is skipped, not fatal.

NOT_UTF8 = "file name is not valid UTF-8; rename it"


def _latin1_name(folder, name: bytes):
    return type(folder)(os.fsdecode(os.path.join(os.fsencode(folder), name)))


def test_ingest_skips_a_file_name_that_is_not_utf8(tmp_path, capsys):
    root = tmp_path / "src"
    for k in range(15):
        save(root / "happy" / f"h{k}.png", face(k))
        save(root / "sad" / f"s{k}.png", face(100 + k))
    save(_latin1_name(root / "happy", b"caf\xe9.png"), face(200), "PNG")  # a unique image: it would reach the shards
    out = tmp_path / "out"
    assert main(["data", "ingest", str(root), "--out", str(out), "--no-mislabels"]) == 0
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert m["total"] == 30
    assert m["quality"]["skipped"]["by_reason"] == {NOT_UTF8: 1}
    with open(out / "report" / "skipped.csv", encoding="utf-8") as fh:
        assert [(r["source"], r["item"], r["reason"]) for r in csv.DictReader(fh)] == [
            ("src", "happy/caf\\xe9.png", NOT_UTF8)
        ]
    for f in out.rglob("*"):
        assert os.fsencode(f.name).decode("utf-8")
        if f.suffix in (".csv", ".json", ".txt", ".html"):
            f.read_bytes().decode("utf-8")
    assert all("\\x" not in i for i in load_split(str(out), "train").ids)


class _FlatModel:
    """Stands in for an exported ONNX model: every image gets the same probabilities."""

    classes = ["happy", "sad"]
    size = 48
    color = "grayscale"
    info = {"classes": classes}

    def logits(self, pixels):
        return np.zeros((len(pixels), len(self.classes)), dtype=np.float32)


def test_predict_skips_a_file_name_that_is_not_utf8(tmp_path, capsys, monkeypatch):
    import release.model_export

    monkeypatch.setattr(release.model_export, "load_onnx", lambda path: _FlatModel())
    images = tmp_path / "images"
    save(images / "a.png", face(1))
    bad = save(_latin1_name(images, b"caf\xe9.png"), face(2), "PNG")
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "model.onnx"), str(images), str(bad), "--out", str(out)]) == 0
    std = capsys.readouterr()
    shown = os.fsencode(bad).decode("utf-8", "backslashreplace")
    assert std.err.splitlines() == [f"fer predict: skipped {shown}: {NOT_UTF8}"] * 2
    with open(out, encoding="utf-8") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [str(images / "a.png")]
    assert main(["predict", str(tmp_path / "model.onnx"), str(bad)]) == 2  # nothing left to classify
    assert capsys.readouterr().err.strip() == f"fer predict: skipped {shown}: {NOT_UTF8}"
