"""Two sweeps on one page (e.g. before and after a data fix): ``build_compare(a, b) -> str``.

Side by side: each experiment's header facts (data version, class counts, quality, space, outcomes,
cost, command); then one table of outcome counts and best score / peak / final with the difference
B - A; the two score distributions overlaid on shared bins; and both leaderboards.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from fer_core.numbers import duration, fmt
from sweeps.experiment import Experiment

from . import figures
from .html import Cell, esc, figure, page, section, table
from .report import header, leaderboard

__all__ = ["build_compare", "write_compare"]


def _best(exp: Experiment, key: str):
    values = [v for t in exp.trials if isinstance(v := t.get(key), float) and math.isfinite(v)]
    return max(values) if values else None


def _facts(exp: Experiment) -> dict[str, object]:
    best = exp.best or {}
    scores = [t["score"] for t in exp.scored]
    counts = exp.outcome_counts()
    out: dict[str, object] = {"trials": len(exp.trials)}
    out.update({o: n for o, n in counts.items()})
    out.update(
        {
            "best score": best.get("score"),
            "best trial": best.get("trial_id"),
            "best trial's peak": best.get("peak"),
            "best trial's final": best.get("final"),
            "highest peak (any trial)": _best(exp, "peak"),
            "highest final (any trial)": _best(exp, "final"),
            "median score": statistics.median(scores) if scores else None,
            "data version": exp.data.version if exp.data else None,
            "epochs": exp.epochs_total,
            "compute": duration(exp.compute_s),
            "wall time": duration(exp.wall_s),
        }
    )
    return out


def _summary(a: Experiment, b: Experiment, labels: tuple[str, str]) -> str:
    fa, fb = _facts(a), _facts(b)
    rows = []
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key, 0), fb.get(key, 0)  # only outcome counts can be missing on one side
        diff = ""
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            d = vb - va
            diff = f"{d:+.4f}" if isinstance(d, float) else f"{d:+d}"
        rows.append([key, Cell(fmt(va), va), Cell(fmt(vb), vb), diff])
    return table(["", labels[0], labels[1], f"{labels[1]} - {labels[0]}"], rows)


def _labels(a: Experiment, b: Experiment) -> tuple[str, str]:
    if a.name != b.name:
        return f"A: {a.name}", f"B: {b.name}"
    return f"A: {a.name} ({a.store.name if a.store.name != a.name else a.where})", f"B: {b.name} ({b.where})"


def build_compare(a: Experiment, b: Experiment) -> str:
    labels = _labels(a, b)
    dist = figures.score_distributions([(labels[0], a), (labels[1], b)])
    body = "".join(
        [
            f"<h1>{esc(labels[0])} vs {esc(labels[1])}</h1>",
            '<div class="side">'
            + "".join(f'<div class="side-{s}">{header(e, level="h2")}</div>' for s, e in (("a", a), ("b", b)))
            + "</div>",
            section("Outcomes and best results", _summary(a, b, labels), anchor="summary"),
            section(
                "Score distributions",
                figure(dist) if dist else "<p class='note'>No scored trials.</p>",
                anchor="scores",
            ),
            section(f"Leaderboard {labels[0]}", leaderboard(a, table_id="leaderboard-a"), anchor="leaderboard-a"),
            section(f"Leaderboard {labels[1]}", leaderboard(b, table_id="leaderboard-b"), anchor="leaderboard-b"),
        ]
    )
    return page(f"{a.name} vs {b.name} - sweep comparison", body)


def write_compare(a: Experiment, b: Experiment, out: str | Path) -> Path:
    from fer_core.atomic import write_text

    return write_text(out, build_compare(a, b))
