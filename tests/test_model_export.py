"""Models that ship: torch.export (.pt2) and ONNX files that reproduce PyTorch's logits, and ``fer predict``."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from fer_core.errors import FerError
from fer_core.models import create_model
from release.model_export import INFO_KEY, TOLERANCE, export_model, load_onnx, model_info

CLASSES = ["happy", "neutral", "sad", "surprise"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("fer_cnn_tiny", num_classes=4, in_chans=1).eval()
    sample = torch.rand(4, 1, 48, 48)
    info = model_info(classes=CLASSES, channels=1, size=48, extra={"data_version": "vtest"})
    out = export_model(model, sample, info)
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.onnx").write_bytes(out.onnx)
    (folder / "model.pt2").write_bytes(out.pt2)
    return model, out, folder


def test_both_formats_reproduce_the_logits_at_any_batch_size(exported):
    model, out, folder = exported
    assert out.checks["onnx"]["max_abs_diff"] <= TOLERANCE["atol"] and out.checks["onnx"]["batch_sizes"] == [4, 5]
    assert out.checks["pt2"]["max_abs_diff"] <= TOLERANCE["atol"]
    x = torch.rand(9, 1, 48, 48)  # a batch size the export never saw
    with torch.no_grad():
        expected = model(x).numpy()
        got_pt2 = torch.export.load(io.BytesIO(out.pt2)).module()(x).numpy()
    onnx_model = load_onnx(folder)
    got_onnx = onnx_model.session.run(None, {"pixels": x.numpy()})[0]
    np.testing.assert_allclose(got_onnx, expected, **TOLERANCE)
    np.testing.assert_allclose(got_pt2, expected, **TOLERANCE)


def test_the_files_describe_the_model(exported):
    _, out, folder = exported
    proto = onnx.load(str(folder / "model.onnx"))
    info = json.loads({p.key: p.value for p in proto.metadata_props}[INFO_KEY])
    assert info["classes"] == CLASSES and info["input"]["size"] == [48, 48] and info["input"]["color"] == "grayscale"
    assert info["input"]["scale"] == "uint8 pixels / 255" and info["data_version"] == "vtest"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # the batch axis is dynamic
    files = {f"{INFO_KEY}.json": ""}
    torch.export.load(io.BytesIO(out.pt2), extra_files=files)
    assert json.loads(files[f"{INFO_KEY}.json"]) == info


def _images(folder):
    """PNG and JPEG files of mixed sizes and modes, and one file that is not an image."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / "a_gray48.png")
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(folder / "b_rgb.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA").save(folder / "c_rgba.png")
    Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16)).save(folder / "d_16bit.png")
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).convert("P").save(folder / "e_palette.png")
    (folder / "f_broken.png").write_bytes(b"not an image")
    return folder


def test_fer_predict_classifies_mixed_files_and_writes_probabilities(exported, tmp_path, capsys):
    from fer_cli.main import main
    from fer_core.data.images import decode_file

    model, _, folder = exported
    images = _images(tmp_path / "imgs")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder / "model.onnx"), str(images), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "f_broken.png" in captured.err
    lines = out.read_text().splitlines()
    assert lines[0] == "file,label,confidence,p_happy,p_neutral,p_sad,p_surprise" and len(lines) == 6
    for line in lines[1:]:
        cells = line.split(",")
        probs = [float(c) for c in cells[3:]]
        assert abs(sum(probs) - 1) < 1e-4 and cells[1] == CLASSES[int(np.argmax(probs))]
        # the same preparation as ingest, then the PyTorch model: the same label and probabilities
        x = torch.from_numpy(np.array(decode_file(cells[0], 48, "grayscale"))).float().permute(2, 0, 1)[None] / 255
        with torch.no_grad():
            expected = torch.softmax(model(x), 1)[0].numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-4)
    # JSON too; the CSV written by fer predict may be replaced, a foreign file may not
    assert main(["predict", str(folder), str(images / "a_gray48.png"), "--out", str(out)]) == 0
    foreign = tmp_path / "notes.csv"
    foreign.write_text("my,own,data\n")
    assert main(["predict", str(folder), str(images / "a_gray48.png"), "--out", str(foreign)]) == 2
    assert foreign.read_text() == "my,own,data\n"
    assert main(["predict", str(folder), str(images / "a_gray48.png"), "--out", str(tmp_path / "p.json")]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["classes"] == CLASSES and doc["predictions"][0]["label"] in CLASSES


def test_predict_refuses_what_it_cannot_trust_or_read(exported, tmp_path):
    _, out, folder = exported
    with pytest.raises(FerError, match="unpickled"):
        load_onnx(folder / "model.pt2")
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x08\x07garbage")
    with pytest.raises(FerError, match="not a model written by 'fer retrain'"):
        load_onnx(bogus)
    with pytest.raises(FerError, match="not found"):
        load_onnx(tmp_path / "missing")
