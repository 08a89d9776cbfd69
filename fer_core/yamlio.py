"""Reading a YAML file with errors that name the file (configs, search spaces)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import FerError


def read_yaml(path: str | os.PathLike, what: str, error: type[FerError] = FerError) -> Any:
    """The parsed document at ``path`` (a file or a storage URI); ``error`` names the file and what is wrong."""
    from .safepaths import is_uri
    from .storage import locate

    if is_uri(path):
        loc = locate(path)
        try:
            text = loc.read_text()
        except FerError as exc:
            raise error(f"cannot read the {what}: {exc}") from None
        path = str(loc)
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise error(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
