"""``fer``: ``data ...``, ``train``, ``evaluate``, ``ladder`` (fer_core); ``sweep`` (sweeps);
``dashboard ...`` (dashboards, review); ``export-best``, ``confirm``, ``retrain`` (release)."""

from __future__ import annotations

import argparse
import sys

from fer_core.errors import run_reporting_errors


def get_parser() -> argparse.ArgumentParser:
    from dashboards import cli as review_cli
    from fer_core.data import cli as data_cli
    from fer_core.train import cli as train_cli
    from release import cli as release_cli
    from sweeps import cli as sweep_cli

    parser = argparse.ArgumentParser(
        prog="fer", description="fer-sweep: FER data quality, training and hyperparameter sweeps."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.add_parser(sub)
    train_cli.add_parsers(sub)
    sweep_cli.add_parsers(sub)
    review_cli.add_parsers(sub)
    release_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    args.command_argv = argv[1:]  # the subcommand's own arguments (fer has no options of its own)
    return run_reporting_errors("fer", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
