"""The ``fer`` command: ``fer data ...``, ``train``, ``evaluate``, ``ladder``, ``dashboard ...``, ``export-best``,
``retrain``, ``confirm``."""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FerError as exc:
        print(f"fer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fer: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
