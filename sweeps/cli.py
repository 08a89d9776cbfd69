"""``fer sweep``: the regularization sweep (``sweeps.driver``), the same as ``python sweeps/regularization.py``."""

from __future__ import annotations

import argparse

PROG = "fer sweep"


def add_parsers(sub) -> None:
    from .driver import DESCRIPTION, add_arguments

    p = sub.add_parser(
        "sweep",
        help="run the regularization sweep on Ray Tune (Optuna TPE + ASHA + collapse stop)",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=_run_sweep)


def _run_sweep(args) -> int:
    from .driver import run

    run(args.command_argv, prog=PROG)
    return 0
