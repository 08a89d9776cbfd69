"""A trained model as files that ship: ``model.pt2`` (``torch.export``) and ``model.onnx`` (ONNX Runtime).

Both take ``pixels``: float32 ``(N, C, H, W)`` = uint8 pixels / 255, any batch size ``N`` (a dynamic
axis), and give ``logits`` ``(N, num_classes)``. Both carry the same description of the model
(``model_info``: class names in output order, input size, color mode, scaling, how images are
prepared) - in ONNX as the metadata property ``fer_model``, in the ``.pt2`` archive as the extra file
``fer_model.json`` - so a model file alone is enough to classify an image (``fer predict``).

``export_model`` checks what it wrote: the ``.pt2`` reloaded and the ONNX model run by ONNX Runtime
must give PyTorch's logits, on the sample batch and on a batch of another size, within ``TOLERANCE``;
otherwise it raises ``FerError`` naming the format and the difference.

Loading: ``load_onnx`` (``fer predict``) reads a protobuf, never a pickle. ``torch.export.load``
unpickles parts of a ``.pt2`` archive, so load ``.pt2`` files only from sources you trust (the model
card says so); ``fer predict`` takes the ONNX file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fer_core.errors import FerError

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["PT2_FILE", "ONNX_FILE", "INFO_KEY", "TOLERANCE", "model_info", "export_model", "load_onnx", "OnnxModel"]

PT2_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
INFO_KEY = "fer_model"  # ONNX metadata property / "<INFO_KEY>.json" in the .pt2 archive
#: ONNX Runtime and torch.export against eager PyTorch, float32 on CPU (kernels differ in summation order).
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def model_info(*, classes: list[str], channels: int, size: int, extra: dict | None = None) -> dict:
    """What a model file says about itself: enough to prepare an image and read the output."""
    return {
        "format": "fer-sweep model",
        "version": 1,
        "classes": [str(c) for c in classes],
        "input": {
            "name": "pixels",
            "dtype": "float32",
            "layout": "NCHW",
            "channels": int(channels),
            "color": "grayscale" if channels == 1 else "rgb",
            "size": [int(size), int(size)],
            "scale": "uint8 pixels / 255",
            "prepare": "as 'fer data ingest': EXIF orientation applied, converted to the color mode, "
            "16-bit scaled to 8-bit, resized to size x size",
        },
        "output": {"name": "logits", "shape": ["N", len(classes)], "order": "classes"},
        **(extra or {}),
    }


@dataclass
class Exported:
    pt2: bytes
    onnx: bytes
    checks: dict  # per format: max_abs_diff, batch sizes checked, tolerance


def export_model(model: torch.nn.Module, sample: torch.Tensor, info: dict) -> Exported:
    """``model`` (eval mode, CPU, float32) as ``.pt2`` and ONNX bytes, each checked against PyTorch.

    ``sample``: a float batch ``(N, C, H, W)`` in [0, 1] with N >= 2 (the batch axis is dynamic; the
    check also runs a batch of N + 1).
    """
    if sample.ndim != 4 or sample.shape[0] < 2:
        raise FerError(f"export needs a sample batch (N >= 2, C, H, W); got shape {tuple(sample.shape)}")
    # Module.to takes a device and memory_format together (torch._C._nn._parse_to); its stub overloads do not.
    net = copy.deepcopy(model)
    net = net.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    net = net.float().eval()
    sample = sample.to("cpu").float().contiguous()
    other = torch.cat([sample, sample[:1].flip(-1)])  # another batch size, other values
    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = ({0: batch},)
    with torch.no_grad():
        expected = [net(sample), net(other)]
        try:
            program = torch.export.export(net, (sample,), dynamic_shapes=shapes, strict=False)
        except Exception as exc:  # noqa: BLE001 - any export failure is the user's model's, said in one line
            raise FerError(f"torch.export of {type(model).__name__} failed: {_first_line(exc)}") from None
        pt2 = _save_pt2(program, info)
        onnx_bytes = _to_onnx(net, sample, shapes, info)
        reloaded = torch.export.load(io.BytesIO(pt2)).module()  # our own bytes, written just above
        pt2_out = [reloaded(x) for x in (sample, other)]
    session = _session(onnx_bytes)
    onnx_out = [torch.from_numpy(session.run(None, {"pixels": x.numpy()})[0]) for x in (sample, other)]
    checks = {
        "pt2": _compare("torch.export (.pt2)", pt2_out, expected),
        "onnx": _compare("ONNX Runtime", onnx_out, expected),
    }
    return Exported(pt2=pt2, onnx=onnx_bytes, checks=checks)


def _save_pt2(program, info: dict) -> bytes:
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={f"{INFO_KEY}.json": json.dumps(info)})
    return buf.getvalue()


def _to_onnx(net: torch.nn.Module, sample: torch.Tensor, shapes: tuple, info: dict) -> bytes:
    # torch.onnx prints its progress to stdout: the command's own output stays readable without it.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            program = torch.onnx.export(
                net,
                (sample,),
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=["pixels"],
                output_names=["logits"],
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001
            raise FerError(f"ONNX export of {type(net).__name__} failed: {_first_line(exc)}") from None
    assert program is not None  # None only for the legacy exporter (dynamo=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = INFO_KEY, json.dumps(info)
    proto.doc_string = f"fer-sweep model: classes {', '.join(info['classes'])}"
    return proto.SerializeToString()


def _compare(what: str, got: list[torch.Tensor], expected: list[torch.Tensor]) -> dict:
    diff = 0.0
    for g, e in zip(got, expected, strict=True):
        if g.shape != e.shape:
            raise FerError(f"{what} export gives logits of shape {tuple(g.shape)}, PyTorch {tuple(e.shape)}")
        diff = max(diff, float((g.float() - e).abs().max()))
        if not torch.allclose(g.float(), e, rtol=TOLERANCE["rtol"], atol=TOLERANCE["atol"]):
            raise FerError(
                f"{what} export does not reproduce the model's logits (max abs difference {diff:.3g}, "
                f"tolerance rtol {TOLERANCE['rtol']:g} atol {TOLERANCE['atol']:g})"
            )
    return {"max_abs_diff": diff, "batch_sizes": [int(e.shape[0]) for e in expected], **TOLERANCE}


def _session(blob: bytes) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no graph-optimizer chatter
    return ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass
class OnnxModel:
    """An exported model run by ONNX Runtime: ``logits(pixels)`` and what its file says about it."""

    path: str
    info: dict
    session: ort.InferenceSession

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def size(self) -> int:
        return int(self.info["input"]["size"][0])

    @property
    def color(self) -> str:
        return str(self.info["input"]["color"])

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels``: uint8 ``(N, H, W, C)`` as ``fer_core.data.images.decode_files`` gives them."""
        x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return self.session.run(None, {"pixels": np.ascontiguousarray(x)})[0]


def load_onnx(path: str | os.PathLike) -> OnnxModel:
    """An ONNX model written by ``fer retrain`` (a file, or the model folder holding ``model.onnx``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, ONNX_FILE)
    if path.endswith(".pt2"):
        raise FerError(
            f"{path}: fer predict runs the ONNX model ({ONNX_FILE} beside it); a .pt2 archive is "
            "unpickled when loaded, so load it in PyTorch only if you trust its source"
        )
    if not os.path.isfile(path):
        raise FerError(f"{path}: not found; pass the {ONNX_FILE} that 'fer retrain' wrote, or its model folder")
    try:
        import onnx

        proto = onnx.load(path, load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        info = json.loads(meta[INFO_KEY])
        classes, size = info["classes"], info["input"]["size"]
        if not (isinstance(classes, list) and classes and isinstance(size, list) and len(size) == 2):
            raise ValueError("classes or input size missing")
        session = _session(proto.SerializeToString())
    except FerError:
        raise
    except Exception as exc:  # noqa: BLE001 - not ONNX, or ONNX without our metadata: one line
        raise FerError(
            f"{path}: not a model written by 'fer retrain' ({_first_line(exc)}); pass its {ONNX_FILE}"
        ) from None
    return OnnxModel(path=path, info=info, session=session)
