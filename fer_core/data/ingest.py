"""The ingest pipeline: read -> relabel -> select classes -> dedup -> merge -> split -> review -> shards.

Everything is written to a temp folder beside ``out`` and renamed into place at the end, so a
failed ingest leaves nothing half-written and an existing data set untouched.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import progress as prog, storage
from ..errors import DataError
from . import classes as cls, dedup, hashing, report, split as splitting
from .readers import Skipped, SourceData, read_source
from .relabels import read_relabels
from .shards import write_manifest, write_shards

# Hamming distance on 64-bit pHash up to which two images count as near duplicates. pHash sets
# exactly 32 of its 64 bits, so distances are even (7 acts as 6). Chosen with
# benchmarks/dedup_threshold.py on the synthetic default set (n=4000, seed 0: 160 injected copies,
# half exact, half re-upload-like near copies; recall = copies grouped with their original,
# precision = groups holding one family only, wrongly grouped = distinct faces put in a group):
#
#     bits  recall  precision  wrongly grouped
#        4   0.925      0.993      2 (0.05 %)
#        6   0.988      0.957     12 (0.3 %)
#        8   1.000      0.749    103 (2.6 %)
#
# Seeds 1 and 2 at 6 bits: recall 0.981 / 0.944, 6 / 10 wrongly grouped (8 bits: 95 / 94). 6 is
# the largest threshold that keeps wrongly grouped faces under 0.5 %; 4 would miss about half of
# the 1-pixel shifts (a 1-pixel shift or rescale of a 48x48 image moves pHash by about 5 bits, in
# natural-image crops too; a re-encode or a brightness or contrast change by 0-2).
# No real FER data set is available in this environment, so these are synthetic figures. Check the
# threshold on your own data: the same kinds of copies are made of your images and the script
# prints the largest threshold that keeps wrongly grouped originals under 0.5 %:
#     python benchmarks/dedup_threshold.py --images /path/to/fer2013 --n 4000
# then pass that as --near-distance.
DEFAULT_NEAR_DISTANCE = 6

# Image side range for --size. pHash needs at least 8x8. FER models take 48-224 pixel faces, and
# images are stored uncompressed and loaded whole: at 512x512 RGB one image is 768 KiB, so 35,000
# (FER2013's size) already take 26 GiB. A larger side is almost surely a typo, and would fail
# later with an out-of-memory error instead of a message.
MIN_SIZE, MAX_SIZE = 8, 512
# How many ids of a --relabels file that match no image are listed in the progress output and
# kept in the manifest (all of them go to report/relabels_unmatched.csv).
SHOW_UNMATCHED, KEEP_UNMATCHED = 10, 100


@dataclass
class IngestOptions:
    src: str
    out: str
    format: str = "auto"
    name: str | None = None
    classes: str | None = None          # "happy,neutral,sad,surprise"; None: every class present
    size: int = 48
    color: str = "grayscale"
    split: str = "80/10/10"             # or "keep"
    seed: int = 0
    near_distance: int = DEFAULT_NEAR_DISTANCE
    conflicts: str = "majority"
    merge: str | None = None
    merge_format: str = "auto"
    merge_cap: str = "median"
    relabels: str | None = None
    mislabels: bool = True
    mislabel_folds: int = 5
    shard_format: str = "parquet"
    workers: int | None = None
    overwrite: bool = False
    progress: bool | None = None
    quiet: bool = False


def _concat(sources: list[SourceData], c: int, size: int) -> tuple[np.ndarray, list, list, list, np.ndarray]:
    images = np.concatenate([s.images for s in sources]) if sources else np.empty((0, size, size, c), np.uint8)
    labels = [lab for s in sources for lab in s.labels]
    ids = [i for s in sources for i in s.ids]
    splits = [sp for s in sources for sp in s.splits]
    rank = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, s in enumerate(sources)])
    return images, labels, ids, splits, rank


def ingest(opts: IngestOptions) -> dict:
    """Run the whole pipeline; returns the manifest that was written.

    ``src`` / ``merge`` may be storage URIs (``s3://bucket/raw/fer2013``): they are copied to a local
    temp folder first (named as the URI, so ids and the data version do not depend on the copy);
    ``out`` may be a URI too (``fer_core.storage.folder_writer``).
    """
    with contextlib.ExitStack() as stack:
        local = replace(opts, src=_local(opts.src, stack), merge=_local(opts.merge, stack),
                        name=opts.name or (storage.locate(opts.src).name if storage.is_uri(opts.src) else None))
        return _ingest(local, recorded_as={local.src: storage.redact(opts.src), local.merge: storage.redact(opts.merge or "")})


def _local(uri: str | None, stack: contextlib.ExitStack) -> str | None:
    """A local copy of the source at ``uri`` (a folder, or one file such as a CSV), or ``uri`` itself when local."""
    if uri is None or not storage.is_uri(uri):
        return uri
    import tempfile

    loc = storage.locate(uri)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fer-src-"))) / loc.name
    if loc.is_file():
        folder.mkdir()
        (folder / loc.name).write_bytes(loc.read_bytes())
        return str(folder / loc.name)
    if not loc.is_dir():
        raise DataError(f"{loc}: no such file or folder; check the source URI")
    loc.download_dir(folder)
    return str(folder)


def _ingest(opts: IngestOptions, recorded_as: dict) -> dict:
    """The pipeline on local sources; ``recorded_as`` maps their paths to what the manifest records (the URIs)."""
    say = lambda msg: prog.say(msg, quiet=opts.quiet)  # noqa: E731
    storage.check_folder(opts.out, **_out_rule(opts))
    keep_splits = opts.split == "keep"
    ratios = None if keep_splits else splitting.parse_ratios(opts.split)
    if opts.conflicts not in dedup.CONFLICT_POLICIES:
        raise DataError(f"--conflicts: expected one of {', '.join(dedup.CONFLICT_POLICIES)}, got {opts.conflicts!r}")
    if opts.near_distance < 0 or opts.near_distance > 32:
        raise DataError(f"--near-distance: expected 0..32 bits, got {opts.near_distance}")
    if not MIN_SIZE <= opts.size <= MAX_SIZE:
        raise DataError(f"--size: expected {MIN_SIZE}..{MAX_SIZE} pixels, got {opts.size}")
    selection = cls.parse_selection(opts.classes)
    relabels = read_relabels(opts.relabels) if opts.relabels else {}
    merge_cap: int | str = int(opts.merge_cap) if str(opts.merge_cap).isdigit() else opts.merge_cap

    say(f"reading {opts.src}")
    primary = read_source(opts.src, opts.format, size=opts.size, color=opts.color, name=opts.name,
                          workers=opts.workers, progress=opts.progress)
    sources = [primary]
    if opts.merge:
        say(f"reading merge source {opts.merge}")
        merged = read_source(opts.merge, opts.merge_format, size=opts.size, color=opts.color,
                             workers=opts.workers, progress=opts.progress)
        if merged.name == primary.name:
            merged.name = f"{merged.name}-merge"
            merged.ids = [f"{merged.name}:{i.split(':', 1)[1]}" for i in merged.ids]
        merged.splits = [None] * len(merged)  # merged images join the pool that is split below
        sources.append(merged)
    skipped: list[tuple[str, Skipped]] = [(s.name, k) for s in sources for k in s.skipped]
    c = 1 if opts.color == "grayscale" else 3
    images, labels, ids, splits, rank = _concat(sources, c, opts.size)
    if len(ids) == 0:
        reasons = Counter(k.reason for _, k in skipped).most_common(3)
        detail = "; ".join(f"{n} x {r}" for r, n in reasons) or "no files found"
        raise DataError(f"{opts.src}: no usable images ({detail}); see the layouts in 'fer data ingest --help'")
    if keep_splits and all(s is None for s in splits[: len(primary)]):
        raise DataError(f"{opts.src}: has no splits of its own, so --split keep cannot work; "
                        "use --split 80/10/10")

    # Relabels from a reviewed mislabels.csv, then the class selection.
    keep = np.ones(len(ids), dtype=bool)
    relabel_stats = Counter()
    unmatched: list[tuple[str, str]] = []
    index = {i: k for k, i in enumerate(ids)}
    for rid, new in relabels.items():
        k = index.get(rid)
        if k is None:
            relabel_stats["unmatched"] += 1
            unmatched.append((rid, new or "drop"))
        elif new is None:
            keep[k] = False
            relabel_stats["dropped"] += 1
        elif labels[k] != new:
            labels[k] = new
            relabel_stats["relabelled"] += 1
    if unmatched:
        # Usually ids from another data set name or source path: say which, so they can be fixed.
        shown = ", ".join(i for i, _ in unmatched[:SHOW_UNMATCHED])
        more = f" and {len(unmatched) - SHOW_UNMATCHED} more" if len(unmatched) > SHOW_UNMATCHED else ""
        say(f"--relabels: {len(unmatched)} id(s) match no image: {shown}{more} "
            f"(ids here look like {ids[0]!r}; all unmatched ids go to report/relabels_unmatched.csv)")
    present = cls.ordered({lab for lab, k in zip(labels, keep) if k})
    class_names = list(selection or present)
    if selection:
        empty = [c_ for c_ in selection if c_ not in present]
        if empty:
            raise DataError(f"{opts.src}: selected class(es) {', '.join(empty)} have no images; "
                            f"classes present: {', '.join(present)}")
    excluded = Counter(lab for lab, k in zip(labels, keep) if k and lab not in class_names)
    keep &= np.array([lab in class_names for lab in labels])
    sel = np.flatnonzero(keep)
    images, rank = images[sel], rank[sel]
    ids = [ids[k] for k in sel]
    splits = [splits[k] for k in sel]
    y = np.array([class_names.index(labels[k]) for k in sel], dtype=np.int64)
    if len(class_names) < 2:
        raise DataError(f"{opts.src}: found only class(es) {', '.join(class_names) or 'none'}; need at least two")

    say(f"hashing {len(ids)} images")
    digests = hashing.exact_digests(images)
    phashes = hashing.phash_batch(images, progress=opts.progress)
    group, exact = dedup.duplicate_groups(digests, phashes, opts.near_distance, progress=opts.progress)
    res = dedup.resolve(group, exact, y, splits, rank, keep_splits=keep_splits, conflicts=opts.conflicts)
    keep = res.keep.copy()
    y = res.labels

    merge_stats: dict = {}
    if opts.merge:
        primary_counts = {k: int(np.sum((y == k) & keep & (rank == 0))) for k in range(len(class_names))}
        room = splitting.merge_caps(primary_counts, merge_cap)
        rng = np.random.default_rng(opts.seed)
        added = {}
        for k, free in room.items():
            cand = np.flatnonzero(keep & (rank == 1) & (y == k))
            rng.shuffle(cand)
            keep[cand[free:]] = False
            added[class_names[k]] = int(min(free, len(cand)))
        merge_stats = {"source": sources[1].name, "cap": merge_cap, "added": added,
                       "available": int(np.sum(res.keep & (rank == 1)))}

    # A class can lose every image to deduplication, conflict resolution or the merge cap (one made
    # only of copies of another class's images, say). Left in the class list it would have no
    # images and an undefined weight, and training on it fails later; so drop it here, and say so.
    group_class_names = class_names  # duplicates.csv speaks of the labels before this step
    left = np.bincount(y[keep], minlength=len(class_names))
    emptied = [c_ for k, c_ in enumerate(class_names) if left[k] == 0]
    if emptied:
        class_names = [c_ for k, c_ in enumerate(class_names) if left[k] > 0]
        if len(class_names) < 2:
            left_names = ", ".join(class_names) or "none"
            raise DataError(f"{opts.src}: after removing duplicates only class(es) {left_names} keep images "
                            f"({', '.join(emptied)} lost all of theirs); need at least two classes; check for "
                            "copies across class folders, or lower --near-distance if distinct faces were grouped")
        say(f"class(es) {', '.join(emptied)}: no images left after removing duplicates"
            f"{' and merging' if opts.merge else ''}; dropped from the class list")
        new_index = np.cumsum(left > 0) - 1      # old label -> new label (emptied ones are not kept)
        y = np.where(keep, new_index[y], -1)

    idx = np.flatnonzero(keep)
    y_kept = y[idx]
    if keep_splits:
        assigned = np.array([s if s is not None else "train" for s in (splits[i] for i in idx)], dtype=object)
        if not np.any(assigned == "val"):
            say("source has no validation split: carving 10% of train into val (stratified)")
            assigned = splitting.carve_val(y_kept, assigned, 0.1, opts.seed)
    else:
        assigned = splitting.stratified_split(y_kept, ratios, opts.seed)

    in_train = np.bincount(y_kept[assigned == "train"], minlength=len(class_names))
    no_train = [c_ for k, c_ in enumerate(class_names) if in_train[k] == 0]
    if no_train:
        fix = "re-split with --split 80/10/10" if keep_splits else "give train a larger share in --split"
        raise DataError(f"{opts.src}: class(es) {', '.join(no_train)} have images only in val/test, none in "
                        f"train, so no model can learn them; add train images, {fix}, or leave them out "
                        "with --classes")

    mislabel_report = None
    if opts.mislabels and len(idx) >= 50:
        from . import mislabels
        say(f"looking for likely mislabels ({opts.mislabel_folds}-fold out-of-fold model)")
        mislabel_report = mislabels.find_mislabels(images[idx], y_kept, len(class_names),
                                                   folds=opts.mislabel_folds, seed=opts.seed,
                                                   progress=opts.progress)

    counts = {s: {c_: int(np.sum((assigned == s) & (y_kept == k))) for k, c_ in enumerate(class_names)}
              for s in ("train", "val", "test")}
    empty_splits = [s for s in ("train", "val") if sum(counts[s].values()) == 0]
    if empty_splits:
        raise DataError(f"{opts.src}: split(s) {', '.join(empty_splits)} would be empty with "
                        f"{len(idx)} images; add data or change --split")
    train_labels = y_kept[assigned == "train"]
    weights = splitting.class_weights(train_labels, len(class_names))
    source_names = [sources[r].name for r in rank[idx]]

    quality = {
        "skipped": {"count": len(skipped), "by_reason": dict(Counter(_reason_kind(k.reason) for _, k in skipped))},
        "excluded_by_class_selection": dict(excluded),
        "classes_emptied_by_dedup": emptied,
        "relabels": {**relabel_stats, **({"unmatched_ids": [i for i, _ in unmatched[:KEEP_UNMATCHED]]}
                                         if unmatched else {})},
        "duplicates": res.summary,
        "merge": merge_stats,
        "mislabels": report.mislabel_summary(mislabel_report),
        "near_distance": opts.near_distance,
    }
    ingest_params = {k: recorded_as.get(v, v) if k in ("src", "merge") else v for k, v in asdict(opts).items()
                     if k not in ("progress", "quiet", "overwrite", "out")}
    with storage.folder_writer(opts.out, **_out_rule(opts), last=("manifest.json",)) as tmp:
        say(f"writing shards to {opts.out}")
        shard_entries = write_shards(tmp, images=images[idx], labels=y_kept, ids=[ids[i] for i in idx],
                                     splits=assigned, sources=source_names, phashes=phashes[idx],
                                     shard_format=opts.shard_format)
        manifest = write_manifest(
            tmp, name=opts.name or primary.name, classes=class_names, image_shape=[opts.size, opts.size, c],
            color=opts.color, shards=shard_entries, counts=counts, class_weights=weights,
            ingest=ingest_params,
            sources=[{"name": s.name, "path": recorded_as.get(s.path, s.path), "format": s.format, "images": len(s)}
                     for s in sources],
            quality=quality, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        report.write_artifacts(tmp / "report", manifest=manifest, skipped=skipped, members=res.members,
                               ids=ids, images=images, class_names=class_names,
                               group_class_names=group_class_names,
                               mislabel_report=mislabel_report, kept_ids=[ids[i] for i in idx],
                               kept_images=images[idx], unmatched_relabels=unmatched if opts.relabels else None)
    return manifest


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: 'unknown label 'x'' and 'unknown label 'y'' count together."""
    return reason.split(":")[0].split(" (")[0].split(" '")[0].split(' "')[0]


def _out_rule(opts: IngestOptions) -> dict:
    """What ``--out`` may be: a new or empty folder or, with ``--overwrite``, a data set - never a source."""
    return dict(overwrite=opts.overwrite, kind="data set", markers=("manifest.json",), protect=(opts.src, opts.merge))
