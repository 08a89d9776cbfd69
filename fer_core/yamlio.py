"""Reading a YAML file with errors that name the file (configs, search spaces)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import FerError


def read_yaml(path: str | Path, what: str, error: type[FerError] = FerError) -> Any:
    """The parsed document at ``path``; ``error`` names the file and says what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
