"""Export a sweep's best configuration as a trainer YAML: ``fer export-best EXPERIMENT_DIR --out best.yaml``.

    >>> export_best("runs/sweeps/reg1", "best.yaml")               # the best completed trial by score
    >>> export_best("runs/sweeps/reg1", "best.yaml", by="confirmed", top=3)

Which trials can win: only those that ran their full epoch budget (outcome ``completed``). A trial
stopped by ASHA at epoch 3 has a score from epoch 3 - the mean of its first epochs, before any late
collapse could show - so comparing it with a 20-epoch trial's score favours the trials that were cut
short; collapsed, diverged, errored and early-stopped trials are excluded for the same reason.

Ranking keys (``by``), all "higher is better", ties broken by score, then trial id:

- ``score``: the sweep's objective, the mean val accuracy of the last ``score_window`` epochs;
- ``final``: the last epoch's val accuracy; ``peak``: the best epoch's val accuracy (optimistic:
  the peak of a noisy curve is the accuracy you are least likely to keep);
- ``confirmed``: the mean score over the fresh seeds of ``fer confirm`` (``confirm.parquet``), the
  least biased choice: the sweep's own winner was selected on one seed's noise.

The YAML is a complete trainer config - every ``TrainConfig`` key, resolved and validated exactly as
the trial ran: sweep base config (data, data version, seed, threads, epochs, ``--set``) < the space's
fixed keys < the trial's sampled values - followed by a ``provenance:`` block (``release.provenance``:
experiment, trial id, its metrics, the sweep command, export time, ranking key) that ``fer train --config``
ignores. So
``fer train --config best.yaml`` and ``fer retrain best.yaml`` both take it. ``data`` is the sweep's
``--data`` as given (a relative path is relative to where the sweep ran; ``--set data=...`` moves
it), and ``data_version`` pins the exact data set the trial saw.

``top=K`` writes K files, one config each, so each one is a ``--config``: ``best.yaml`` is rank 1,
``best-2.yaml`` rank 2, ... (the ``-N`` goes before the suffix). Files are written atomically.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

from experiment_store import Outcome
from fer_core.atomic import write_text
from fer_core.errors import FerError
from fer_core.numbers import fmt, is_finite as _finite
from fer_core.train.config import TrainConfig, dump_config
from fer_core.validate import KEY, check_int
from sweeps.experiment import Experiment, load_experiment as _load_experiment

from . import provenance as _provenance
from .provenance import is_export

__all__ = [
    "Experiment",
    "load_experiment",
    "rank_trials",
    "best_trials",
    "export_best",
    "export_paths",
    "BY",
    "is_export",
]

#: Ranking keys of ``--by``.
BY = ("score", "final", "peak", "confirmed")


def load_experiment(exp_dir: str | Path) -> Experiment:
    """A finished sweep's experiment (``sweep.json`` and ``trials.parquet``); a clear ``FerError`` naming
    what is missing otherwise."""
    return _load_experiment(exp_dir, finished=True)


# ----------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------


def rank_trials(trials: list[dict], by: str = "score") -> list[dict]:
    """The completed trials with a finite ``by`` value, best first (ties: higher score, then trial id)."""
    if by not in ("score", "final", "peak"):
        raise FerError(f"--by: must be one of score, final, peak to rank trials; got {by!r}")
    done = [r for r in trials if r.get("outcome") == Outcome.COMPLETED and _finite(r.get(by))]
    return sorted(
        done, key=lambda r: (-r[by], -(r["score"] if _finite(r.get("score")) else -math.inf), str(r["trial_id"]))
    )


def no_finished_trial(exp: Experiment) -> FerError:
    counts: dict[str, int] = {}
    for r in exp.trials:
        counts[r.get("outcome") or "?"] = counts.get(r.get("outcome") or "?", 0) + 1
    seen = ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda t: -t[1])) or "no trials at all"
    budget = exp.max_epochs
    return FerError(
        f"experiment {exp.name} ({exp.where}): no trial ran its full budget"
        + (f" of {budget} epochs" if budget else "")
        + f" (outcomes: {seen}). A trial stopped early has a score "
        "from the epoch it stopped at, not from the budget, so export-best only picks completed trials. "
        "Run the sweep longer (more --samples, a larger --grace-period, or --no-asha) or check why trials "
        "stopped (summary.txt, trials.parquet's stop_reason)"
    )


def best_trials(exp: Experiment, by: str = "score", top: int = 1) -> list[dict]:
    """The ``top`` best trials of ``exp`` as dicts ``{row, rank, candidates, value, confirmed}``."""
    if by not in BY:
        raise FerError(f"--by: must be one of {', '.join(BY)}; got {by!r}")
    check_int(top, "--top", low=1, kind=int, one_rule=True, error=FerError, template=KEY)
    if by == "confirmed":
        from experiment_store import read_confirm, summarize

        rows = read_confirm(exp.store)
        assert rows is not None  # required (the default): a missing confirm.parquet raises instead
        ranking = summarize(rows)
        if not ranking:
            raise FerError(
                f"{exp.store.file('confirm.parquet')}: no confirmation run has a score; rerun 'fer confirm {exp.where}'"
            )
        return [
            {
                "row": exp.trial(r["trial_id"]),
                "rank": i + 1,
                "candidates": len(ranking),
                "value": r["mean"],
                "confirmed": r,
            }
            for i, r in enumerate(ranking[:top])
        ]
    ranked = rank_trials(exp.trials, by)
    if not ranked:
        raise no_finished_trial(exp)
    return [
        {"row": row, "rank": i + 1, "candidates": len(ranked), "value": row[by], "confirmed": None}
        for i, row in enumerate(ranked[:top])
    ]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def export_paths(out: str | Path, k: int) -> list[Path]:
    """``best.yaml`` -> ``[best.yaml, best-2.yaml, ..., best-K.yaml]``."""
    out = Path(out)
    return [out] + [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(2, k + 1)]


def _targets(out: str | Path, k: int) -> list:
    """Where the K files go: local paths (``export_paths``), or ``Location``s next to a storage URI."""
    from fer_core.safepaths import is_uri
    from fer_core.storage import locate

    if not is_uri(out):
        return export_paths(out, k)
    first = locate(out)
    stem, dot, suffix = first.name.rpartition(".")
    stem, suffix = (stem, f".{suffix}") if dot else (first.name, "")
    return [first] + [first.sibling(f"{stem}-{i}{suffix}") for i in range(2, k + 1)]


def render(cfg: TrainConfig, prov: dict) -> str:
    """The exported file: a comment header, every config key, then the ``provenance:`` block."""
    m = prov["metrics"]
    head = [
        f"# Trial {prov['trial_id']} of sweep experiment {prov['experiment']}: rank {prov['rank']} of "
        f"{prov['candidates']} by {prov['ranked_by']}"
        + (
            f" (mean {prov['confirmed']['mean']:.4f} over {prov['confirmed']['n']} fresh seeds)"
            if prov.get("confirmed")
            else ""
        )
        + (
            f"; score {m['score']:.4f}, peak {m['peak']:.4f} at epoch {m['peak_epoch']}, final {m['final']:.4f}"
            if _finite(m.get("score")) and _finite(m.get("peak")) and _finite(m.get("final"))
            else ""
        ),
        "# A complete trainer config: fer train --config THIS.yaml, or fer retrain THIS.yaml.",
        "# The provenance block below records where it came from; the trainer ignores it.",
    ]
    return "\n".join(head) + "\n" + dump_config(cfg) + _provenance.dump(prov)


def export_best(exp_dir: str | Path, out: str | Path, *, by: str = "score", top: int = 1) -> list[dict]:
    """Write the ``top`` best configs of the experiment to ``out`` (and ``out-2``, ...); returns what was written."""
    from fer_core.safepaths import check_file_replaceable

    exp = load_experiment(exp_dir)
    picks = best_trials(exp, by, top)
    paths = _targets(out, len(picks))
    for path in paths:  # every target is checked before the first is written
        if isinstance(path, Path):
            check_file_replaceable(path, is_ours=is_export, what="a config exported by 'fer export-best'")
        elif path.is_file() and not is_export(path):
            raise FerError(
                f"--out {path}: exists and is not a config exported by 'fer export-best', so it is not "
                "replaced; choose another --out"
            )
    written = []
    for pick, path in zip(picks, paths, strict=True):
        cfg = exp.config(pick["row"])
        prov = _provenance.build(exp, pick, by)
        if isinstance(path, Path):
            write_text(path, render(cfg, prov))
        else:
            path.write_text(render(cfg, prov))
        written.append(
            {
                "path": path,
                "trial_id": pick["row"]["trial_id"],
                "rank": pick["rank"],
                "value": pick["value"],
                "candidates": pick["candidates"],
                "config": cfg,
                "provenance": prov,
            }
        )
    _record(exp, by, written)
    return written


def _record(exp: Experiment, by: str, written: list[dict]) -> None:
    """Put the exports on the experiment's record (``decisions.json``); an experiment this user cannot write
    (someone else's storage) keeps its record, and the export stands: a warning says so."""
    import getpass
    import time

    from experiment_store import Decision, record_decisions
    from fer_core.storage import redact

    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):
        user = None
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    decisions = [
        Decision(
            action="export-best",
            trial_id=str(w["trial_id"]),
            by=by,
            rank=int(w["rank"]),
            value=w["value"],
            score=w["provenance"]["metrics"].get("score"),
            file=redact(str(w["path"].resolve() if isinstance(w["path"], Path) else w["path"])),
            time=now,
            user=user,
        )
        for w in written
    ]
    try:
        record_decisions(exp.store, decisions)
    except (OSError, FerError) as exc:
        print(
            f"fer export-best: warning: the export was not recorded in {exp.where} ({exc}); the files are written",
            file=sys.stderr,
        )


def run_export(args) -> int:
    """``fer export-best`` (argparse namespace: experiment, out, by, top)."""
    written = export_best(args.experiment, args.out, by=args.by, top=args.top)
    for w in written:
        m = w["provenance"]["metrics"]
        extra = (
            f"mean {w['value']:.4f} over {w['provenance']['confirmed']['n']} seeds, "
            if w["provenance"].get("confirmed")
            else ""
        )
        print(
            f"wrote {w['path']}: trial {w['trial_id']} - rank {w['rank']} of {w['candidates']} by {args.by} "
            f"({extra}score {fmt(m['score'], strict=True)}, peak {fmt(m['peak'], strict=True)} at epoch "
            f"{m['peak_epoch']}, final {fmt(m['final'], strict=True)}, {m['epochs']} epochs, {w['config'].model})"
        )
    if len(written) < args.top:
        print(
            f"only {len(written)} {'confirmed configurations' if args.by == 'confirmed' else 'completed trials'} "
            f"to rank; wrote {len(written)} file(s), not {args.top}",
            file=sys.stderr,
        )
    from release.retrain import default_out

    first = written[0]["path"]
    first = first.uri if hasattr(first, "fs") else first
    print(f"next: fer retrain {shlex.quote(str(first))}   (run folder: {default_out(first, 'train')})")
    return 0
