"""The data report: counts per split and class, duplicates, leakage, conflicts, mislabel candidates.

Written at ingest time to ``<dataset>/report/`` (report.txt, report.json, CSVs and PNGs) and
printed again from the manifest by ``fer data report DIR``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .. import atomic, jsonio

SPLITS = ("train", "val", "test")


def mislabel_summary(rep, max_candidates: int) -> dict:
    """The manifest's quality/mislabels entry for a ``MislabelReport`` (None: the search did not run).

    ``candidates`` counts every flagged image; ``listed`` how many of them the review files hold
    (at most ``max_candidates``).
    """
    if rep is None:
        return {"ran": False}
    from .mislabels import EXPECTED_ERRORS_METHOD

    return {
        "ran": True,
        "flag_by": rep.flag_by,
        "candidates": int(len(rep.candidates)),
        "listed": int(min(len(rep.candidates), max_candidates)),
        "expected_errors": int(rep.expected_errors),
        "expected_errors_method": EXPECTED_ERRORS_METHOD,
        "images_searched": int(len(rep.given)),
        "oof_accuracy": round(float(rep.oof_accuracy), 4),
    }


def build_report(manifest: dict) -> dict:
    """Everything the report shows, from the manifest alone."""
    counts = manifest["counts"]
    q = manifest.get("quality", {})
    return {
        "dataset": manifest["name"],
        "version": manifest["version"],
        "created": manifest.get("created"),
        "classes": manifest["classes"],
        "image_shape": manifest["image_shape"],
        "counts": counts,
        "totals": {s: sum(counts.get(s, {}).values()) for s in SPLITS},
        "class_weights": manifest.get("class_weights", {}),
        "sources": manifest.get("sources", []),
        "skipped": q.get("skipped", {}),
        "excluded_by_class_selection": q.get("excluded_by_class_selection", {}),
        "classes_emptied_by_dedup": q.get("classes_emptied_by_dedup", []),
        "relabels": q.get("relabels", {}),
        "duplicates": q.get("duplicates", {}),
        "merge": q.get("merge", {}),
        "mislabels": q.get("mislabels", {}),
        "near_distance": q.get("near_distance"),
        "copy_distance": q.get("copy_distance"),
        "grouping": q.get("grouping", {}),
    }


def render_text(rep: dict) -> str:
    out = io.StringIO()
    w = lambda s="": print(s, file=out)  # noqa: E731
    h, wd, c = rep["image_shape"]
    w(f"data set {rep['dataset']}  version {rep['version']}  ({wd}x{h}x{c}, created {rep['created']})")
    w("sources: " + ", ".join(f"{s['name']} ({s['format']}, {s['images']} images read)" for s in rep["sources"]))
    w()
    classes = rep["classes"]
    width = max(8, *(len(x) for x in classes))
    w(f"{'split':<7}" + "".join(f"{x:>{width + 2}}" for x in classes) + f"{'total':>9}")
    for s in SPLITS:
        row = rep["counts"].get(s, {})
        w(f"{s:<7}" + "".join(f"{row.get(x, 0):>{width + 2}}" for x in classes) + f"{rep['totals'][s]:>9}")
    w("class weights (balanced, from train): " + ", ".join(f"{k} {v:.3f}" for k, v in rep["class_weights"].items()))
    w()
    d = rep["duplicates"]
    w(
        f"duplicates (pHash distance <= {rep['near_distance']}): {d.get('groups', 0)} groups "
        f"({d.get('exact_groups', 0)} exact, {d.get('near_groups', 0)} near) "
        f"holding {d.get('images_in_groups', 0)} images; "
        f"{d.get('removed_duplicates', 0)} copies removed"
    )
    w(
        f"leakage: {d.get('groups_straddling_source_splits', 0)} groups straddled the source's splits; "
        f"{d.get('removed_leakage', 0)} copies removed from val/test {d.get('removed_leakage_by_split', {})}"
    )
    if "max_group_diameter" in d:
        w(
            f"  no chaining: every member within {rep['near_distance']} bits of its group's representative; "
            f"widest group {d['max_group_diameter']} bits apart; groups by diameter {d.get('groups_by_diameter', {})}"
        )
    copies = f" (copies: pHash distance <= {rep['copy_distance']})" if rep.get("copy_distance") is not None else ""
    w(
        f"label conflicts{copies}: {d.get('conflict_groups', 0)} sets of copies; "
        f"{d.get('relabelled_to_majority', 0)} kept with the "
        f"majority label, {d.get('dropped_conflicts', 0)} images dropped (ties or --conflicts drop)"
    )
    if d.get("groups_keeping_several_labels"):
        w(
            f"  {d['groups_keeping_several_labels']} near-duplicate groups keep images with different labels "
            "(not copies: e.g. one person's two expressions), each group in one split"
        )
    g = rep.get("grouping") or {}
    if g.get("subjects"):
        sj = g["subjects"]
        per = ", ".join(f"{k} {v}" for k, v in sj["per_split"].items())
        w(
            f"subjects ({sj['by']}): {sj['count']} ({per}); in more than one split: {sj['in_several_splits']}"
            + (f" e.g. {', '.join(sj['in_several_splits_examples'])}" if sj["in_several_splits"] else "")
        )
    if g:
        w(
            f"split kept together: {g.get('units_kept_together', 0)} groups of images "
            f"({g.get('images_in_those_units', 0)} images: subjects and near-duplicate survivors)"
        )
    sk = rep["skipped"]
    w(
        f"skipped: {sk.get('count', 0)} items"
        + (f" {sk.get('by_reason')}" if sk.get("count") else "")
        + "  (details: report/skipped.csv)"
    )
    if rep["excluded_by_class_selection"]:
        w(f"excluded by --classes: {rep['excluded_by_class_selection']}")
    if rep["classes_emptied_by_dedup"]:
        w(
            f"dropped class(es) with no images left after removing duplicates: "
            f"{', '.join(rep['classes_emptied_by_dedup'])}"
        )
    if rep["relabels"]:
        r = rep["relabels"]
        w(
            f"relabels applied: {r.get('relabelled', 0)} relabelled, {r.get('dropped', 0)} dropped, "
            f"{r.get('unmatched', 0)} ids matched no image"
        )
        if r.get("unmatched"):
            listed = r.get("unmatched_ids", [])[:10]
            more = r["unmatched"] - len(listed)
            w(
                "  unmatched: "
                + ", ".join(listed)
                + (f" and {more} more" if more > 0 else "")
                + "  (all: report/relabels_unmatched.csv)"
            )
    if rep["merge"]:
        m = rep["merge"]
        w(f"merged from {m['source']} (cap {m['cap']}): added {m['added']} of {m['available']} unique images")
    ml = rep["mislabels"]
    if ml.get("ran"):
        w(f"likely mislabels: {_mislabel_line(ml)}")
    else:
        w("likely mislabels: not searched (--no-mislabels or too few images)")
    return out.getvalue()


def _mislabel_line(ml: dict) -> str:
    """One line on the mislabel search; manifests written before the cleanlab flags lack some keys."""
    flagged, listed = ml["candidates"], ml.get("listed", ml["candidates"])
    expected = ml.get("expected_errors")
    line = f"{flagged} flagged" + (f" by {ml['flag_by']}" if "flag_by" in ml else "")
    if expected is not None:
        line += f", about {expected} label errors expected (cleanlab off-diagonal estimate)"
    line += f", out-of-fold accuracy {ml['oof_accuracy']:.3f}; "
    shown = f"the top {listed}" if listed < flagged else "all of them"
    return line + (
        f"{shown} in report/mislabels.csv: review them with 'fer data review DATA' "
        "(or edit new_label) and pass the result back with --relabels"
    )


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_counts_png(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = rep["classes"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(classes), 3.2), dpi=100)
    x = np.arange(len(classes))
    for k, s in enumerate(SPLITS):
        vals = [rep["counts"].get(s, {}).get(c, 0) for c in classes]
        ax.bar(x + (k - 1) * 0.27, vals, width=0.27, label=s)
    ax.set_xticks(x, classes)
    ax.set_ylabel("images")
    ax.set_title(f"{rep['dataset']} {rep['version']}: images per class and split")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def duplicates_png(
    members: list[dict],
    images: np.ndarray,
    ids: list[str],
    class_names: list[str],
    path: Path,
    max_groups: int = 12,
    max_members: int = 6,
) -> None:
    """One row per duplicate group (conflicts first): thumbnails labelled label/split/action."""
    by_group: dict[int, list[dict]] = {}
    for m in members:
        by_group.setdefault(m["group"], []).append(m)
    groups = sorted(by_group.values(), key=lambda g: (not g[0]["conflict"], g[0]["group"]))[:max_groups]
    cell, pad, text_h = 64, 4, 26
    cols = max((min(len(g), max_members) for g in groups), default=1)
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, max(1, len(groups)) * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if not groups:
        draw.text((pad, pad), "no duplicates", fill="black")
    for r, g in enumerate(groups):
        for k, m in enumerate(g[:max_members]):
            img = images[m["index"]]
            img = img[:, :, 0] if img.shape[2] == 1 else img
            thumb = Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST)
            x0, y0 = pad + k * (cell + pad), pad + r * (cell + text_h + pad)
            sheet.paste(thumb.convert("RGB"), (x0, y0))
            color = "red" if m["conflict"] else "black"
            draw.text((x0, y0 + cell), f"{class_names[m['label']][:8]} {m['split'] or '-'}", fill=color)
            draw.text((x0, y0 + cell + 12), m["action"].replace("removed-", "rm ")[:11], fill=color)
    atomic.write_bytes(path, _png_bytes(sheet))


def write_artifacts(
    folder: Path,
    *,
    manifest: dict,
    skipped,
    members: list[dict],
    ids: list[str],
    images: np.ndarray,
    class_names: list[str],
    mislabel_report,
    kept_ids: list[str],
    kept_images: np.ndarray,
    group_class_names: list[str] | None = None,
    unmatched_relabels: list[tuple[str, str]] | None = None,
    max_candidates: int = 500,
) -> dict:
    """Write the report files. ``members`` carry labels into ``group_class_names`` (the class list
    before emptied classes were dropped; default ``class_names``); ``unmatched_relabels`` are the
    (id, new_label) rows of --relabels that matched no image (None: no --relabels given);
    ``max_candidates`` caps the rows of mislabels.csv (and the contact sheet)."""
    group_class_names = group_class_names or class_names
    folder.mkdir(parents=True, exist_ok=True)
    rep = build_report(manifest)
    atomic.write_text(folder / "report.json", jsonio.dumps(rep, indent=2) + "\n")
    atomic.write_text(folder / "report.txt", render_text(rep))
    _write_csv(folder / "skipped.csv", ["source", "item", "reason"], [[s, k.item, k.reason] for s, k in skipped])
    _write_csv(
        folder / "duplicates.csv",
        ["group", "id", "label", "split", "exact", "conflict", "action", "diameter"],
        [
            [
                m["group"],
                ids[m["index"]],
                group_class_names[m["label"]],
                m["split"] or "",
                int(m["exact"]),
                int(m["conflict"]),
                m["action"],
                m.get("diameter", ""),
            ]
            for m in members
        ],
    )
    if unmatched_relabels is not None:
        _write_csv(folder / "relabels_unmatched.csv", ["id", "new_label"], [list(r) for r in unmatched_relabels])
    class_counts_png(rep, folder / "class_counts.png")
    duplicates_png(members, images, ids, group_class_names, folder / "duplicates.png")
    if mislabel_report is not None:
        from .mislabels import write_review

        write_review(mislabel_report, kept_ids, class_names, folder, images=kept_images, top=max_candidates)
    return rep
