"""The ``fer`` command: ``fer data ...``, ``train``, ``evaluate``, ``ladder``, ``dashboard ...``, ``export-best``,
``retrain``, ``confirm``."""

from __future__ import annotations

import argparse
import errno
import sys

from .errors import FerError


def get_parser() -> argparse.ArgumentParser:
    from .data import cli as data_cli
    from dashboards import best_cli, cli as dashboard_cli

    from .train import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="fer", description="fer-sweep: FER data quality, training and hyperparameter sweeps.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.add_parser(sub)
    train_cli.add_parsers(sub)
    dashboard_cli.add_parsers(sub)
    best_cli.add_parsers(sub)
    return parser


def run_reporting_errors(prog: str, fn, *, interrupted: str = "nothing half-written was left behind") -> int:
    """Run ``fn()`` as a command: a ``FerError`` becomes one line ``<prog>: error: ...`` and exit 2."""
    try:
        return int(fn() or 0)
    except FerError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # What the checks before the work could not foresee (a disk filling up, a folder made read-only
        # meanwhile): one line naming the file; atomic writes leave nothing half-written behind.
        where = f"{exc.filename}: " if exc.filename else ""
        hint = ("free some space or choose another location" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else "check the path and its permissions")
        print(f"{prog}: error: {where}{exc.strerror or exc}; {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return run_reporting_errors("fer", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
