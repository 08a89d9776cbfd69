"""``fer data``: synthesize the embedded default data, ingest real data sets, print the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import jsonio
from ..errors import DataError
from ..storage import redact
from .readers import FORMATS


def add_parser(sub) -> None:
    data = sub.add_parser(
        "data",
        help="synthesize, ingest and report on FER data sets",
        description="Build versioned, deduplicated, stratified Arrow/Parquet data sets.",
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _synth_parser(dsub)
    _ingest_parser(dsub)
    _report_parser(dsub)
    _review_parser(dsub)


def _synth_parser(dsub) -> None:
    from .synth import SynthConfig

    d = SynthConfig()
    p = dsub.add_parser(
        "synth",
        help="draw the embedded default data set (procedural 48x48 faces)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Procedurally draw grayscale faces for happy, neutral, sad and surprise, with injected "
        "duplicates and label noise whose ground truth goes to truth.csv.",
    )
    p.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    p.add_argument("--n", type=int, default=d.n, help="number of faces")
    p.add_argument("--noise", type=float, default=d.label_noise, help="share of images given a wrong label")
    p.add_argument("--duplicates", type=float, default=d.duplicate_share, help="share of injected duplicate copies")
    p.add_argument(
        "--expression-strength",
        type=float,
        default=d.expression_strength,
        help="scale of every expression's intensity, up to 2",
    )
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same images)")
    p.add_argument(
        "--layout",
        choices=("folders", "split-folders", "fer2013-csv"),
        default="folders",
        help="on-disk layout: ROOT/<class>/*.png, ROOT/<split>/<class>/*.png or a FER2013 CSV",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from dataclasses import replace

    from .ingest import MAX_SIZE, MIN_SIZE
    from .synth import SynthConfig, generate, write_folders

    if args.n < 8:
        raise DataError(f"--n: expected at least 8 images, got {args.n}")
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise DataError(f"--size: expected {MIN_SIZE}..{MAX_SIZE} pixels, got {args.size}")
    if not 0 <= args.noise < 1 or not 0 <= args.duplicates < 1:
        raise DataError("--noise and --duplicates are shares in [0, 1)")
    t0 = time.perf_counter()
    cfg = replace(
        SynthConfig(),
        n=args.n,
        label_noise=args.noise,
        duplicate_share=args.duplicates,
        size=args.size,
        seed=args.seed,
        expression_strength=args.expression_strength,
    )
    synth = generate(cfg, progress=None)
    out = write_folders(synth, args.out, layout=args.layout, overwrite=args.overwrite)
    print(
        f"wrote {len(synth.labels)} synthetic faces ({int(synth.noisy.sum())} with noisy labels, "
        f"{int((synth.dup_of >= 0).sum())} duplicate copies) to {out} in {time.perf_counter() - t0:.1f}s; "
        f"ground truth in {str(out).rstrip('/')}/truth.csv"
    )
    return 0


def _ingest_parser(dsub) -> None:
    from .ingest import IngestOptions

    d = IngestOptions(src="", out="")
    p = dsub.add_parser(
        "ingest",
        help="read a real FER layout into deduplicated, stratified shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read SRC, drop unreadable items (with reasons), remove exact and near duplicates and "
        "cross-split leakage, split stratified, flag likely mislabels, and write Parquet/Arrow "
        "shards with a manifest and a report to --out (atomically).",
        epilog="duplicates: images within --near-distance pHash bits of a group's representative are near duplicates;\n"
        "  of those with one label one stays; copies (within --copy-distance) with different labels are a\n"
        "  conflict (--conflicts); near duplicates with different labels all stay. A group's survivors, and\n"
        "  with --group-by all images of a subject, stay in one split (a stratified group split).\n"
        "layouts:\n"
        "  folders      SRC/<class>/*  or  SRC/<split>/<class>/*  (split: train, val|validation, test)\n"
        "  fer2013-csv  SRC.csv with emotion,pixels[,Usage][,group]  (Usage: Training, PublicTest, PrivateTest)\n"
        "  rafdb        SRC/EmoLabel/list_patition_label.txt + SRC/Image/aligned/*  (labels 1-7)\n"
        "class names are normalized (sadness->sad, happiness->happy, surprised->surprise, anger->angry).",
    )
    p.add_argument("src", help="source folder or CSV file")
    p.add_argument("--out", required=True, help="data set folder to write (replaced atomically with --overwrite)")
    p.add_argument("--format", choices=FORMATS, default=d.format, help="source layout (default: auto-detect)")
    p.add_argument("--name", default=None, help="data set name (default: the source's folder or file name)")
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated classes to keep, e.g. happy,neutral,sad,surprise (default: all present)",
    )
    p.add_argument("--size", type=int, default=d.size, help="resize images to SIZE x SIZE, 8..512 (default: 48)")
    p.add_argument(
        "--color", choices=("grayscale", "rgb"), default=d.color, help="stored color mode (default: grayscale)"
    )
    p.add_argument(
        "--split", default=d.split, help="'keep' the source's own splits, or train/val/test ratios (default: 80/10/10)"
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help="seed for the split, merge sampling and mislabel folds (default: 0)"
    )
    p.add_argument(
        "--near-distance",
        type=int,
        default=d.near_distance,
        help=f"max pHash Hamming distance (bits of 64) for near duplicates (default: {d.near_distance}, "
        "chosen on real faces, LFW and FER2013; check it on your data with "
        "benchmarks/dedup_threshold.py --images SRC)",
    )
    p.add_argument(
        "--copy-distance",
        type=int,
        default=d.copy_distance,
        help=f"max pHash distance at which near duplicates are copies of one picture (default: {d.copy_distance}); "
        "only copies with different labels are a conflict, other near duplicates (e.g. one person's two "
        "expressions) keep their labels",
    )
    p.add_argument(
        "--conflicts",
        choices=("majority", "drop"),
        default=d.conflicts,
        help="copies with different labels: keep one copy with the majority label "
        "(a tie drops them) or drop them all (default: majority)",
    )
    p.add_argument(
        "--group-by",
        default=None,
        metavar="REGEX",
        help="subjects: the first capture group of REGEX over each image's path inside the source "
        r"(class folder included), e.g. '^[^/]+/(S\d+)_' for CK+-style names like anger/S010_004_00000017.png; "
        "all images of a subject go to one split (a CSV source may instead have a 'group' column)",
    )
    p.add_argument("--merge", default=None, help="second source whose images top up under-represented classes")
    p.add_argument("--merge-format", choices=FORMATS, default=d.merge_format, help="layout of --merge (default: auto)")
    p.add_argument(
        "--merge-cap",
        default=d.merge_cap,
        help="add merged images to a class until it holds this many: a count, 'median' or 'max' "
        "of the primary source's class counts (default: median)",
    )
    p.add_argument(
        "--relabels",
        default=None,
        help="CSV with id,new_label (a class name or 'drop'), e.g. a reviewed report/mislabels.csv",
    )
    p.add_argument(
        "--no-mislabels", dest="mislabels", action="store_false", help="skip the out-of-fold mislabel search"
    )
    p.add_argument(
        "--mislabel-folds", type=int, default=d.mislabel_folds, help="folds for out-of-fold predictions (default: 5)"
    )
    p.add_argument(
        "--max-candidates",
        type=int,
        default=d.max_candidates,
        help="list at most this many likely mislabels (the most likely first) in report/mislabels.csv and "
        f"the contact sheet; the report still counts all that were flagged (default: {d.max_candidates})",
    )
    p.add_argument(
        "--shard-format",
        choices=("parquet", "arrow"),
        default=d.shard_format,
        help="Parquet or Arrow IPC (Feather v2) shards; pixels are stored uncompressed (default: parquet)",
    )
    p.add_argument("--workers", type=int, default=None, help="decode processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run_ingest)


def _run_ingest(args) -> int:
    from .ingest import IngestOptions, ingest
    from .report import build_report, render_text

    opts = IngestOptions(
        src=args.src,
        out=args.out,
        format=args.format,
        name=args.name,
        classes=args.classes,
        size=args.size,
        color=args.color,
        split=args.split,
        seed=args.seed,
        near_distance=args.near_distance,
        copy_distance=args.copy_distance,
        conflicts=args.conflicts,
        group_by=args.group_by,
        merge=args.merge,
        merge_format=args.merge_format,
        merge_cap=args.merge_cap,
        relabels=args.relabels,
        mislabels=args.mislabels,
        mislabel_folds=args.mislabel_folds,
        max_candidates=args.max_candidates,
        shard_format=args.shard_format,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
        quiet=args.quiet,
    )
    t0 = time.perf_counter()
    manifest = ingest(opts)
    print(render_text(build_report(manifest)), end="")
    print(
        f"wrote {redact(args.out)} (version {manifest['version']}, {manifest['total']} images) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _report_parser(dsub) -> None:
    p = dsub.add_parser(
        "report",
        help="print a data set's report (text or JSON)",
        description="Counts per split and class, duplicates, leakage, conflicts and mislabel "
        "candidates of a data set written by 'fer data ingest'. Every shard is "
        "read first and checked against the manifest (checksum, rows, counts).",
    )
    p.add_argument("dir", help="data set folder or URI (file://, s3://, gs://)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not read the shards to check their checksums, rows and counts against the "
        "manifest (quicker for a large remote data set)",
    )
    p.set_defaults(func=_run_report)


def _run_report(args) -> int:
    from .loader import verify_dataset
    from .manifest import read_manifest
    from .report import build_report, render_text

    manifest = read_manifest(args.dir)
    # The report is printed from the manifest, so first check the shards still hold what it says.
    checked = verify_dataset(manifest) if args.verify else None
    rep = build_report(manifest.data)
    if args.json:
        print(jsonio.dumps(rep, indent=2))
        return 0
    print(render_text(rep), end="")
    if checked is not None:
        print(f"checked {checked['shards']} shards against the manifest: checksums, rows and counts match")
    else:
        print("shards not checked (--no-verify)")
    report_dir = Path(args.dir) / "report"
    if "://" not in args.dir and report_dir.is_dir():
        pngs = sorted(p.name for p in report_dir.glob("*.png"))
        print(
            f"figures and review files in {report_dir}: {', '.join(pngs)}; "
            f"{', '.join(sorted(p.name for p in report_dir.glob('*.csv')))}"
        )
    return 0


def _review_parser(dsub) -> None:
    from .review_page import DEFAULT_MAX

    p = dsub.add_parser(
        "review",
        help="write the mislabel review page (one self-contained HTML file)",
        description="Write one HTML page (images inlined, nothing fetched) with the top likely mislabels of "
        "a data set written by 'fer data ingest': review them with the keyboard (A accept the suggestion, "
        "K keep, D drop, 1-9 pick a class, arrows move), progress is kept in the browser, and a button "
        "downloads the relabels.csv that 'fer data ingest --relabels' takes.",
    )
    p.add_argument("dir", help="data set folder or URI (file://, s3://, gs://)")
    p.add_argument("--out", default=None, help="page to write (default: DIR/report/review.html)")
    p.add_argument(
        "--max",
        type=int,
        default=DEFAULT_MAX,
        help=f"show at most this many candidates, the most likely mislabeled first (default: {DEFAULT_MAX})",
    )
    p.set_defaults(func=_run_review)


def _run_review(args) -> int:
    from .review_page import write_review_page

    path, shown = write_review_page(args.dir, args.out, max_items=args.max)
    print(
        f"wrote {path} ({shown} candidates); open it in a browser, review with the keys it lists, "
        "then 'Download relabels.csv' and pass it to 'fer data ingest ... --relabels relabels.csv'"
    )
    return 0
