"""The review page of one sweep: ``build_report(exp) -> str`` (one self-contained HTML document).

Sections, in the order a review goes (the Tuning Playbook's questions): what was run (data, space,
outcomes, cost, the command that reproduces it), the leaderboard, what the best trials' curves do
late in training and which trials collapsed, where the good trials sit in the space (parallel
coordinates, axis plots with edge-of-range warnings), what mattered (fANOVA), and how the best
trial errs (its confusion matrix and per-class scores).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiment_store import MAIN_OUTCOMES, Outcome
from fer_core.errors import FerError
from fer_core.numbers import duration, fmt
from sweeps.experiment import Experiment

from . import figures
from .edges import edge_warnings
from .html import Cell, esc, figure, note, page, section, table, warning
from .importance import MAX_TRIALS, param_importances

__all__ = ["build_report", "header", "leaderboard", "outcome_table", "LEADERBOARD_ID"]

LEADERBOARD_ID = "leaderboard"


def _num(v) -> str:
    """A metric cell: ``0.6123``; ``-`` when missing or not finite."""
    return fmt(v, nonfinite="-")


def _hp(v) -> str:
    """A hyperparameter value cell: ``0.0003``."""
    return fmt(v, 3, spec="g")


def _class_counts(exp: Experiment) -> str:
    counts = (exp.manifest or {}).get("counts") or {}
    splits = [s for s in ("train", "val", "test") if s in counts] + [
        s for s in counts if s not in ("train", "val", "test")
    ]
    if not counts:
        d = exp.data
        return table(["split", "images"], [[s, getattr(d, s)] for s in ("train", "val")]) if d else note("not known")
    classes = exp.classes or sorted({c for s in splits for c in counts[s]})
    rows = [[c] + [counts[s].get(c, 0) for s in splits] for c in classes]
    rows.append([Cell("total", "")] + [sum(counts[s].values()) for s in splits])
    return table(["class"] + splits, rows)


def _quality(exp: Experiment) -> str:
    q = (exp.manifest or {}).get("quality")
    if not q:
        return "not known (the data set's manifest is not readable from here)" if exp.data else "not known"
    d = q.get("duplicates") or {}
    parts = [
        f"{d.get('removed_duplicates', 0)} duplicate images removed "
        f"({d.get('groups', 0)} groups: {d.get('exact_groups', 0)} exact, {d.get('near_groups', 0)} near)",
        f"{d.get('removed_leakage', 0)} removed as leakage across splits",
        f"{d.get('dropped_conflicts', 0)} dropped in label conflicts",
    ]
    skipped = (q.get("skipped") or {}).get("count")
    if skipped:
        parts.append(f"{skipped} unreadable or unusable files skipped")
    return "; ".join(parts)


def _space_table(exp: Experiment) -> str:
    rows = [[p.name, p.type, p.range_text()] for p in exp.params]
    out = table(["hyperparameter", "type", "range / choices"], rows)
    if exp.fixed:
        out += "<p><b>fixed:</b> " + ", ".join(f"{esc(k)} = {esc(v)}" for k, v in exp.fixed.items()) + "</p>"
    if exp.space_inferred:
        out += note("inferred from the sampled values (sweep.json is written at the end of the sweep)")
    return out


def outcome_table(exp: Experiment) -> str:
    counts = exp.outcome_counts()
    rows = [[o, n] for o, n in counts.items() if o in MAIN_OUTCOMES or n]
    rows.append([Cell("total", ""), len(exp.trials)])
    return table(["outcome", "trials"], rows)


def header(exp: Experiment, *, level: str = "h1") -> str:
    """Name, data, space, outcomes, cost and the command, as a block of facts."""
    data = exp.data
    version = (data.version if data else None) or (exp.manifest or {}).get("version") or "not known"
    badge = ' <span class="badge">live: sweep running</span>' if exp.live else ""
    facts = [
        (
            "data set",
            f"{esc((data.uri if data else None) or 'not known')} &middot; version <code>{esc(version)}</code>",
        ),
        ("class counts", _class_counts(exp)),
        ("data quality", esc(_quality(exp))),
        ("objective", esc(exp.objective or "score = mean val accuracy of the last epochs (max)")),
        ("trials by outcome", outcome_table(exp)),
        (
            "compute",
            f"{esc(duration(exp.compute_s))} (sum of trial times) &middot; wall time "
            f"{esc(duration(exp.wall_s))} &middot; {exp.epochs_total} epochs in total"
            + (f" (budget {exp.max_epochs} per trial)" if exp.max_epochs else ""),
        ),
    ]
    left = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    right = f"<dt>search space</dt><dd>{_space_table(exp)}</dd>"
    command = exp.command
    cmd = f"<pre><code>{esc(command)}</code></pre>" if command else note("not known until sweep.json is written")
    notes = "".join(note(n) for n in exp.notes)
    return (
        f'<header><{level} class="exp-name">{esc(exp.name)}</{level}>{badge}'
        f"<p>experiment folder <code>{esc(exp.where)}</code></p>"
        f'<div class="facts"><dl>{left}</dl><dl>{right}</dl></div>'
        f"<h3>Command that reproduces this sweep</h3>{cmd}{notes}</header>"
    )


#: Leaderboard rows shown at a time (a big sweep's table pages instead of loading thousands of rows at once).
LEADERBOARD_PAGE = 100


def leaderboard(exp: Experiment, *, table_id: str = LEADERBOARD_ID) -> str:
    names = [p.name for p in exp.params]
    packed = any(t.get("pack_id") is not None for t in exp.trials)
    head = [
        "rank",
        "trial",
        "score",
        "final",
        "peak",
        "peak @",
        "drop from peak",
        "epochs",
        "outcome",
        "time",
        *names,
        *(["pack / slot"] if packed else []),
        "stop reason",
    ]
    ranked = exp.scored
    rank = {t["trial_id"]: i + 1 for i, t in enumerate(ranked)}
    rows = []
    for t in ranked + [t for t in exp.trials if t["trial_id"] not in rank]:
        vals = [exp.value(t, n) for n in names]
        rows.append(
            [
                Cell(rank.get(t["trial_id"], "-"), rank.get(t["trial_id"])),
                t["trial_id"],
                Cell(_num(t.get("score")), t.get("score")),
                Cell(_num(t.get("final")), t.get("final")),
                Cell(_num(t.get("peak")), t.get("peak")),
                t.get("peak_epoch"),
                Cell(_num(t.get("drop_from_peak")), t.get("drop_from_peak")),
                t.get("epochs"),
                t.get("outcome"),
                Cell(duration(t.get("time_s")), t.get("time_s")),
                *[Cell(_hp(v), v) for v in vals],
                *([_pack_cell(t)] if packed else []),
                Cell(t.get("stop_reason") or "", t.get("stop_reason") or "", cls="reason"),
            ]
        )
    return table(head, rows, sortable=True, table_id=table_id, tall=len(rows) > 20, page_size=LEADERBOARD_PAGE)


def _pack_cell(t: dict) -> Cell:
    if t.get("pack_id") is None:
        return Cell("-", None)
    text = f"{t['pack_id']} / {t.get('pack_slot')}"
    return Cell(text, text, title=t.get("pack_device") or "")


def _collapsed(exp: Experiment) -> str:
    collapsed = [t for t in exp.trials if t.get("outcome") == Outcome.COLLAPSED]
    if not collapsed:
        return note("No trial collapsed.")
    rows = [
        [
            t["trial_id"],
            Cell(_num(t.get("peak")), t.get("peak")),
            t.get("peak_epoch"),
            Cell(_num(t.get("final")), t.get("final")),
            Cell(_num(t.get("drop_from_peak")), t.get("drop_from_peak")),
            t.get("epochs"),
            Cell(t.get("stop_reason") or "", t.get("stop_reason") or "", cls="reason"),
        ]
        for t in collapsed
    ]
    return figure(figures.collapsed_view(exp)) + table(
        ["trial", "peak", "peak @", "final", "drop", "stopped after epoch", "reason"],
        rows,
        sortable=True,
        page_size=LEADERBOARD_PAGE,
    )


def _packs(exp: Experiment) -> str | None:
    """Which trials shared a GPU (``--pack K``): per pack, its device and the trials its slots trained (by
    slot); None for a sweep that did not pack."""
    packed = [t for t in exp.trials if t.get("pack_id") is not None]
    if not packed:
        return None
    groups: dict[tuple, list[dict]] = {}
    for t in packed:
        groups.setdefault((t.get("pack_device") or "", t["pack_id"]), []).append(t)
    rows = []
    for (device, pack_id), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        slots = {int(t["pack_slot"]) for t in members if t.get("pack_slot") is not None}
        members = sorted(members, key=lambda t: -1 if t.get("pack_slot") is None else int(t["pack_slot"]))
        listed = ", ".join(
            f"{t['trial_id']} (slot {t.get('pack_slot')}, {t.get('outcome')}, {t.get('epochs')} ep)" for t in members
        )
        epochs = sum(int(t.get("epochs") or 0) for t in members)
        rows.append([device, pack_id, len(members), len(slots), epochs, Cell(listed, listed, cls="reason")])
    text = (
        f"{len(packed)} trials trained in {len(groups)} pack(s): each pack is one process on one device that "
        "trains its slots' trials as one batched network; a slot freed by a stopped trial took the next one."
    )
    return note(text) + table(
        ["device", "pack", "trials", "slots used", "trial-epochs", "trials (slot, outcome, epochs)"],
        rows,
        sortable=True,
        page_size=LEADERBOARD_PAGE,
    )


def _importance(exp: Experiment, max_trials: int) -> str:
    groups = param_importances(exp, max_trials)
    out = figure(figures.importance_bars(groups))
    for g in groups:
        if not g.values:
            out += note(f"{g.title}: {g.note}.")
        elif g.sampled:
            out += note(
                f"{g.title}: fit on {g.trials} of {g.of} trials, a random sample with a fixed seed (the same "
                "on every build), which keeps the page quick to build for big sweeps."
            )
    conditional = [p.name for p in exp.params if p.when]
    if conditional and not exp.space_inferred:
        out += note(
            f"Conditional parameters ({', '.join(conditional)}) exist only in some trials; they are assessed "
            "only among the trials where they exist, the first group covers the unconditional parameters "
            "over all completed trials. Only completed trials count (a trial stopped early has no comparable "
            "score)."
        )
    return out


def _best_confusion(exp: Experiment) -> str:
    best = exp.best
    if best is None:
        return note("No trial has a score yet.")
    rows = exp.history(best["trial_id"])
    last_epoch = rows[-1].get("epoch") if rows else None
    for row in reversed(rows):
        raw = row.get("val_confusion")
        if not raw:
            continue
        try:
            cm = json.loads(raw) if isinstance(raw, str) else raw
            from fer_core.train.metrics import classification_metrics

            classes = exp.classes if len(exp.classes) == len(cm) else [f"class {i}" for i in range(len(cm))]
            m = classification_metrics(cm, classes)
        except (ValueError, TypeError) as exc:
            return note(f"The best trial's confusion matrix is not readable ({exc}).")
        epoch = row.get("epoch")
        which = (
            "its last epoch"
            if epoch == last_epoch
            else f"the last epoch with a confusion matrix (epoch {last_epoch} has none)"
        )
        window = exp.score_window
        desc = (
            f"Trial {best['trial_id']} (score {best['score']:.4f}): validation confusion matrix at epoch {epoch}, "
            f"{which}; its score is the mean val accuracy of its last {window} epochs."
        )
        per = [
            [
                c,
                Cell(f"{v['precision']:.3f}", v["precision"]),
                Cell(f"{v['recall']:.3f}", v["recall"]),
                Cell(f"{v['f1']:.3f}", v["f1"]),
                v["support"],
            ]
            for c, v in m["per_class"].items()
        ]
        per.append(
            [
                Cell("macro avg", ""),
                Cell(f"{m['macro_precision']:.3f}", ""),
                Cell(f"{m['macro_recall']:.3f}", ""),
                Cell(f"{m['macro_f1']:.3f}", ""),
                sum(v["support"] for v in m["per_class"].values()),
            ]
        )
        return (
            f'<p class="which-epoch">{esc(desc)}</p><div class="side"><div>'
            + figure(figures.confusion_heatmap(cm, classes, f"{best['trial_id']}, epoch {epoch}"))
            + "</div><div>"
            + table(["class", "precision", "recall", "F1", "support"], per, sortable=True)
            + f"<p>accuracy {m['accuracy']:.4f} &middot; macro F1 {m['macro_f1']:.4f}</p></div></div>"
        )
    return note(f"Trial {best['trial_id']} recorded no validation confusion matrix.")


def _confirmed(exp: Experiment) -> str:
    """``fer confirm``'s ranking: mean score over fresh seeds with its spread, beside the sweep's score."""
    from experiment_store import read_confirm, summarize

    rows = read_confirm(exp.store, required=False)
    if rows is None:
        return note(
            f"Not confirmed yet: 'fer confirm {exp.where} --top 3 --seeds 3' re-trains the top "
            "configurations with fresh seeds; the sweep's winner was picked on one seed."
        )
    ranking = summarize(rows)
    sweep_score = {t["trial_id"]: t.get("score") for t in exp.trials}
    cells = [
        [
            i + 1,
            r["trial_id"],
            Cell(_num(sweep_score.get(r["trial_id"])), sweep_score.get(r["trial_id"])),
            Cell(_num(r["mean"]), r["mean"]),
            Cell(_num(r["std"]), r["std"]),
            Cell(_num(r["min"]), r["min"]),
            Cell(_num(r["max"]), r["max"]),
            r["n"],
            r["failed"],
            ", ".join(map(str, r["seeds"])),
        ]
        for i, r in enumerate(ranking)
    ]
    return figure(figures.confirmed_spread(ranking, sweep_score)) + table(
        ["rank", "trial", "sweep score", "mean score", "std", "min", "max", "seeds run", "failed", "seeds"],
        cells,
        sortable=True,
    )


def _decisions(exp: Experiment) -> str:
    from experiment_store import read_decisions

    try:
        decisions = read_decisions(exp.store)
    except FerError as exc:
        return warning(str(exc))
    if not decisions:
        return note(
            "No configuration exported yet: 'fer export-best' records each export here (trial, ranking, "
            "file, time, user)."
        )
    rows = [
        [
            d.time,
            d.action,
            d.trial_id,
            f"{d.by} (rank {d.rank})",
            Cell(_num(d.value), d.value),
            Cell(_num(d.score), d.score),
            d.file,
            d.user or "-",
        ]
        for d in reversed(decisions)
    ]
    return table(
        ["time (UTC)", "decision", "trial", "ranked by", "value", "score", "file", "user"], rows, sortable=True
    )


def build_report(exp: Experiment, *, live_version: str | None = None, importance_trials: int = MAX_TRIALS) -> str:
    """The experiment's page; the importance fit uses at most ``importance_trials`` trials per group (0: all)."""
    warnings = edge_warnings(exp)
    edge = "".join(warning(w.message()) for w in warnings) or (
        note("No best trial sits at the edge of the searched ranges (top 3 by score, within 5% of a bound).")
        if not exp.space_inferred
        else note("Edge checks need the searched ranges (sweep.json).")
    )
    curves = figures.learning_curves(exp)
    parallel = figures.parallel_coordinates(exp)
    packs = _packs(exp)
    body = "".join(
        [
            header(exp),
            section(
                f"Leaderboard ({len(exp.trials)} trials; click a header to sort)",
                leaderboard(exp),
                anchor="leaderboard",
            ),
            section(
                "Learning curves of the top trials",
                figure(curves) if curves else note("No trial has reported an epoch yet."),
                anchor="curves",
            ),
            section("Collapsed trials", _collapsed(exp), anchor="collapsed"),
            section("Packs: trials that shared a GPU or CPU (--pack)", packs, anchor="packs") if packs else "",
            section(
                "Parallel coordinates",
                figure(parallel) if parallel else note("Needs at least 2 scored trials."),
                anchor="parallel",
            ),
            section("Axis plots", edge + figure(figures.axis_plots(exp, warnings)), anchor="axis"),
            section("Hyperparameter importance", _importance(exp, importance_trials), anchor="importance"),
            section("Best trial: confusion matrix and per-class scores", _best_confusion(exp), anchor="confusion"),
            section("Confirmed with fresh seeds (fer confirm)", _confirmed(exp), anchor="confirmed"),
            section("Decisions on record (fer export-best)", _decisions(exp), anchor="decisions"),
        ]
    )
    return page(f"{exp.name} - sweep review", body, live_version=live_version)


def write_report(exp: Experiment, out: str | Path) -> Path:
    from fer_core.atomic import write_text

    return write_text(out, build_report(exp))
