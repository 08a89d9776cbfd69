import os

import numpy as np
import pytest

from conftest import face, save
from fer_core.data.readers import detect_format, read_source
from fer_core.errors import DataError


def _reasons(src):
    return {s.item: s.reason for s in src.skipped}


def test_flat_class_folders_with_bad_items(tmp_path):
    root = tmp_path / "ck"
    save(root / "Happiness" / "a.png", face(1))
    save(root / "happy" / "b.jpg", face(2), "JPEG")
    save(root / "Sadness" / "c.png", np.stack([face(3)] * 3, -1))  # RGB converted to gray
    save(root / "surprised" / "big.png", face(4, size=100))  # resized
    (root / "sad").mkdir()
    (root / "sad" / "notes.txt").write_text("not an image")
    good = (root / "happy" / "b.jpg").read_bytes()
    (root / "happy" / "trunc.jpg").write_bytes(good[: len(good) // 3])
    save(root / "contempt_faces" / "x.png", face(5))  # unknown label
    src = read_source(root)
    assert src.format == "folders"
    assert sorted(src.labels) == ["happy", "happy", "sad", "surprise"]
    assert src.images.shape == (4, 48, 48, 1) and src.images.dtype == np.uint8
    assert all(s is None for s in src.splits)
    assert all(i.startswith("ck:") for i in src.ids)
    reasons = _reasons(src)
    assert "not an image" in reasons["sad/notes.txt"]
    assert "unreadable" in reasons["happy/trunc.jpg"] or "truncated" in reasons["happy/trunc.jpg"]
    assert "unknown label 'contempt_faces'" in reasons["contempt_faces/x.png"]


def test_split_folders_and_rgb(tmp_path):
    root = tmp_path / "fer_images"
    for split in ("train", "validation", "test"):
        for k, cls in enumerate(("angry", "neutral")):
            save(root / split / cls / f"{k}.png", face(hash((split, cls)) % 1000))
    src = read_source(root, color="rgb", size=32)
    assert src.images.shape == (6, 32, 32, 3)
    assert sorted(set(src.splits)) == ["test", "train", "val"]


def test_mixed_layout_is_an_error(tmp_path):
    save(tmp_path / "train" / "happy" / "a.png", face(1))
    save(tmp_path / "happy" / "b.png", face(2))
    with pytest.raises(DataError, match="mixes split folders"):
        read_source(tmp_path)


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        read_source(tmp_path / "empty")


def test_fer2013_csv_rows(tmp_path):
    px = " ".join(map(str, face(1).ravel()))
    rows = [
        "emotion,pixels,Usage",
        f"3,{px},Training",
        f"4,{px},PublicTest",
        f"6,{px},PrivateTest",
        f"3,{' '.join(['1'] * 100)},Training",  # wrong count
        f"3,{px.replace('1', 'x', 1)},Training",  # non-numeric
        f"9,{px},Training",  # unknown label
        f"3,{px},Holdout",  # unknown usage
        f"3,{' '.join(['300'] * 2304)},Training",  # out of range
    ]
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(rows) + "\n")
    assert detect_format(path) == "fer2013-csv"
    src = read_source(path)
    assert src.labels == ["happy", "sad", "neutral"]
    assert src.splits == ["train", "val", "test"]
    assert (src.images[0, :, :, 0] == face(1)).all()
    reasons = _reasons(src)
    assert "expected 2304 pixel values, found 100" in reasons["row 5"]
    assert "non-numeric" in reasons["row 6"]
    assert "unknown label '9'" in reasons["row 7"]
    assert "unknown Usage" in reasons["row 8"]
    assert "0..255" in reasons["row 9"]


def test_fer2013_bad_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="header must contain 'emotion' and 'pixels'"):
        read_source(path)


def test_rafdb_layout(tmp_path):
    root = tmp_path / "RAF"
    (root / "EmoLabel").mkdir(parents=True)
    save(root / "Image" / "aligned" / "train_00001_aligned.jpg", face(1, 100), "JPEG")
    save(root / "Image" / "aligned" / "test_0001_aligned.jpg", face(2, 100), "JPEG")
    save(root / "Image" / "aligned" / "train_00003_aligned.jpg", face(3, 100), "JPEG")
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 4\ntest_0001.jpg 1\ntrain_00002.jpg 5\ntrain_00003.jpg 9\nbroken line here\n"
    )
    assert detect_format(root) == "rafdb"
    src = read_source(root)
    assert src.labels == ["happy", "surprise"]
    assert src.splits == ["train", "test"]
    assert src.ids[0] == "RAF:Image/aligned/train_00001_aligned.jpg"
    reasons = " | ".join(s.reason for s in src.skipped)
    assert "'train_00002.jpg' not found" in reasons
    assert "unknown label '9'" in reasons
    assert "expected 'name label'" in reasons


def _raw(path, *parts: bytes):
    """``path`` joined with raw name bytes (a Latin-1 'café.png' from a zip made on Windows)."""
    return type(path)(os.fsdecode(os.path.join(os.fsencode(path), *parts)))


def test_names_that_are_not_utf8_are_skipped_with_a_printable_item(tmp_path):
    root = tmp_path / "src"
    save(root / "happy" / "a.png", face(1))
    save(root / "sad" / "b.png", face(2))
    save(_raw(root, b"happy", b"caf\xe9.png"), face(3), "PNG")
    save(_raw(root, b"sad\xff", b"c.png"), face(4), "PNG")
    src = read_source(root)
    assert sorted(src.ids) == ["src:happy/a.png", "src:sad/b.png"]
    assert _reasons(src) == {
        "happy/caf\\xe9.png": "file name is not valid UTF-8; rename it",
        "sad\\xff/c.png": "folder name is not valid UTF-8; rename it",
    }
    for s in src.skipped:
        s.item.encode("utf-8")  # printable: the undecodable bytes are escaped


def test_split_layout_names_that_are_not_utf8_are_printable(tmp_path):
    root = tmp_path / "src"
    save(root / "train" / "happy" / "a.png", face(1))
    save(root / "train" / "sad" / "b.png", face(2))
    save(_raw(root, b"train", b"sad", b"\xe9t\xe9.png"), face(3), "PNG")
    save(_raw(root, b"train", b"loose\xe9.png"), face(4), "PNG")
    src = read_source(root)
    assert sorted(src.ids) == ["src:train/happy/a.png", "src:train/sad/b.png"]
    assert _reasons(src) == {
        "train/sad/\\xe9t\\xe9.png": "file name is not valid UTF-8; rename it",
        "train/loose\\xe9.png": "file outside a class folder",
    }


def test_source_folder_name_that_is_not_utf8_is_one_clear_error(tmp_path):
    root = _raw(tmp_path, b"caf\xe9")
    save(root / "happy" / "a.png", face(1))
    with pytest.raises(DataError, match=r"caf\\xe9: .*not valid UTF-8; rename") as info:
        read_source(root)
    str(info.value).encode("utf-8")
