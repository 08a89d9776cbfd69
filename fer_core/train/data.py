"""A data set's splits as uint8 tensors, held once and sliced into batches on the training device.

    >>> data = load_train_data("runs/default/data", splits=("train", "val"))
    >>> data.x("train").shape, data.x("train").dtype
    (torch.Size([3074, 1, 48, 48]), torch.uint8)

``TrainData`` holds plain numpy arrays (so Ray can put it in the object store once per node and
every trial reads it zero-copy); ``DeviceSplit`` puts one split on the training device as uint8 when
it fits (a 48x48 gray image is 2.3 KB: 100k images are 230 MB) and slices batches with one
``index_select``, no collation, no per-image Python.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FerError

__all__ = ["TrainData", "DeviceSplit", "load_train_data"]


@dataclass
class TrainData:
    """Splits of one data set version: images (N, H, W, C) uint8 and labels (N,) int64 per split."""

    classes: list[str]
    version: str
    uri: str
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        first = next(iter(self.images.values()))
        return tuple(first.shape[1:])

    def has(self, split: str) -> bool:
        return split in self.images

    def require(self, split: str) -> None:
        if split not in self.images:
            raise FerError(
                f"data set {self.uri} (version {self.version}) has no {split!r} split loaded; "
                f"loaded: {', '.join(self.images) or 'none'}"
            )
        if len(self.labels[split]) == 0:
            raise FerError(
                f"data set {self.uri}: the {split!r} split is empty; re-ingest with a split "
                "that gives it images (e.g. --split 80/10/10)"
            )

    def x(self, split: str) -> torch.Tensor:
        """(N, C, H, W) uint8 view (channels_last strides), sharing memory with the array."""
        self.require(split)
        return _as_tensor(self.images[split]).permute(0, 3, 1, 2)

    def y(self, split: str) -> torch.Tensor:
        self.require(split)
        return _as_tensor(self.labels[split])

    def counts(self, split: str) -> list[int]:
        self.require(split)
        return np.bincount(self.labels[split], minlength=self.num_classes).tolist()


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor over ``arr``. Arrays from Ray's object store are read-only shared memory:
    torch warns about those because writing would be undefined; the trainer only ever reads them."""
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def load_train_data(
    uri: str, *, expected_version: str | None = None, splits: tuple[str, ...] = ("train", "val"), verify: bool = True
) -> TrainData:
    """Read ``splits`` of the data set at ``uri`` (folder or pyarrow URI), checking the manifest version."""
    from ..data.loader import load_split

    loaded = {s: load_split(uri, s, expected_version=expected_version, verify=verify, with_ids=False) for s in splits}
    manifest = next(iter(loaded.values())).manifest
    return TrainData(
        classes=list(manifest.classes),
        version=manifest.version,
        uri=str(uri),
        images={s: v.images for s, v in loaded.items()},
        labels={s: v.labels for s, v in loaded.items()},
    )


class DeviceSplit:
    """One split on ``device``: whole as uint8 when it fits, else pinned in host memory, batch by batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device, *, memory_fraction: float = 0.5):
        self.n = len(y)
        self.device = device
        resident = device.type == "cpu"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            resident = x.numel() * x.element_size() < memory_fraction * free
        self.resident = resident
        if resident:
            self.x = x.to(device, memory_format=torch.channels_last) if x.dim() == 4 else x.to(device)
            self.y = y.to(device)
        else:
            self.x = x.contiguous(memory_format=torch.channels_last).pin_memory()
            self.y = y.pin_memory()

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and int64 labels of the samples ``idx`` (on this split's index device)."""
        if self.resident:
            return self.x.index_select(0, idx), self.y.index_select(0, idx)
        idx = idx.cpu()
        return (
            self.x.index_select(0, idx).to(self.device, non_blocking=True),
            self.y.index_select(0, idx).to(self.device, non_blocking=True),
        )

    @property
    def index_device(self) -> torch.device:
        return self.device if self.resident else torch.device("cpu")
