"""Errors that reach the user as one clear line (the CLI prints them without a traceback).

``run_reporting_errors`` is how every command (``fer ...``, the sweep script) turns them into that line.
"""

from __future__ import annotations

import errno
import sys


class FerError(Exception):
    """Base class for every error fer-sweep reports to a user.

    The message says what went wrong, naming the file, row or key, and what to do next.
    """


class DataError(FerError):
    """Bad or unusable input data (a file, a row, a layout)."""


class ManifestError(FerError):
    """A data set's manifest is missing, malformed, of the wrong version, or fails its checksums."""


def run_reporting_errors(prog: str, fn, *, interrupted: str = "nothing half-written was left behind") -> int:
    """Run ``fn()`` as a command: a ``FerError`` becomes one line ``<prog>: error: ...`` and exit 2."""
    try:
        return int(fn() or 0)
    except FerError as exc:
        from .storage import redact_text  # a URI named in a message keeps no secret (errors sits below storage)

        print(f"{prog}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # What the checks before the work could not foresee (a disk filling up, a folder made read-only
        # meanwhile): one line naming the file; atomic writes leave nothing half-written behind.
        where = f"{exc.filename}: " if exc.filename else ""
        hint = (
            "free some space or choose another location"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the path and its permissions"
        )
        print(f"{prog}: error: {where}{exc.strerror or exc}; {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130
