"""W&B's run files on disk: the transaction log ``run-<id>.wandb`` of each run folder, and when it is whole.

A run folder (``offline-run-<time>-<id>`` offline, ``run-<time>-<id>`` online) holds the run's transaction
log: a 7-byte file header (``:W&B`` ...) then a LevelDB-style log of protobuf ``Record`` messages in 32 KiB
blocks. It is what ``wandb sync`` uploads. wandb-core buffers the log and writes it out when the run's
stream closes, and that happens *after* ``run.finish()`` returns: ``finish`` only tells the service that
the run is done. Measured (wandb 0.31, offline): the log is its 7-byte header during the whole run and after
``finish()``'s exit handshake; its records appear once the service has handled ``inform_finish``, which
``finish()`` sends without waiting for an answer. A command that moves or uploads the run folder right
after ``finish()`` can therefore take a header without records, and delete the place where the records were
about to land. ``wait_written`` waits until every log ends with the run's ``exit`` record (the last one W&B
writes), so the folder can be moved.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["records", "run_logs", "is_written", "wait_written"]

_HEADER = 7  # ":W&B" + 3 bytes of version
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator:
    """The protobuf ``Record`` messages of a ``.wandb`` transaction log, in order (a record cut off at the
    end of the file, as during writing, is not yielded)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log (it does not start with ':W&B')")
    pos, buf = _HEADER, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            return
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (_FULL, _FIRST) else buf + chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()  # type: ignore[attr-defined]  # a generated protobuf module
            record.ParseFromString(buf)
            yield record


def run_logs(folder: Path) -> list[Path]:
    """The transaction logs of every run folder under ``folder`` (links are not followed)."""
    return sorted(
        log
        for log in Path(folder).rglob("run-*.wandb")
        if not log.is_symlink() and log.parent.name.startswith(("offline-run-", "run-"))
    )


def is_written(log: Path) -> bool:
    """Whether the transaction log ``log`` holds its run's ``exit`` record (W&B writes it last)."""
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # (wandb requires protobuf)

    try:
        kinds = [r.WhichOneof("record_type") for r in records(log)]
    except (OSError, ValueError, DecodeError):  # gone, not a log yet, or a record still being written
        return False
    return bool(kinds) and kinds[-1] == "exit"


def wait_written(folder: Path, *, timeout: float = 60.0, poll: float = 0.1) -> list[Path]:
    """Wait until every run log under ``folder`` is written out (``is_written``), at most ``timeout``
    seconds; the logs that still are not (a run killed before it finished has no ``exit`` record)."""
    deadline = time.monotonic() + timeout
    pending = run_logs(folder)
    while True:
        pending = [log for log in pending if not is_written(log)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(poll)
