"""Progress bars for long steps (ingest, hashing, training), quiet when asked or not on a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled(progress: bool | None) -> bool:
    """``None`` means: show bars when stderr is a terminal and FER_NO_PROGRESS is not set."""
    if progress is None:
        return sys.stderr.isatty() and not os.environ.get("FER_NO_PROGRESS")
    return progress


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    progress: bool | None = None,
) -> tqdm:
    """A tqdm bar on stderr; disabled (zero cost) when progress is off."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled(progress),
        dynamic_ncols=True,
        leave=False,
        file=sys.stderr,
    )


def say(message: str, *, quiet: bool = False) -> None:
    """One line of status on stderr (stdout stays for results)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
