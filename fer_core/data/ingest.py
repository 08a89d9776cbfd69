"""The ingest pipeline: read -> relabel -> select classes -> dedup -> merge -> split -> review -> shards.

Each step is one stage: a function that reads and updates the :class:`ImagePool` (the images and
what was decided about each); ``_ingest`` runs them in order. Everything is written to a temp folder
beside ``out`` and renamed into place at the end, so a failed ingest leaves nothing half-written and
an existing data set untouched.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import progress as prog, storage
from ..errors import DataError
from ..safepaths import is_uri
from . import classes as cls, dedup, phash, report, split as splitting
from .readers import Skipped, SourceData, read_source
from .relabels import read_relabels
from .shards import write_manifest, write_shards

# Hamming distance on 64-bit pHash up to which an image joins a near-duplicate group (within this
# many bits of the group's representative; fer_core.data.dedup). pHash sets exactly 32 of its 64 bits,
# so distances are even (7 acts as 6). Chosen on real faces with benchmarks/dedup_threshold.py
# (--lfw: scikit-image's 100 LFW face crops; --images: FER2013's 28,709 training images; 300 copies
# per kind; recall = the copy lands in its original's group):
#
#     bits  LFW shift/rescale/re-encode  LFW faces  FER2013 shift/rescale/re-encode  FER2013 joined pairs
#                                       grouped                                    that are copies
#        4         .55 / .56 / 1.0          0          .53 / .65 / 1.0           48 of 50 sampled
#        6         .82 / .87 / 1.0          0          .84 / .90 / 1.0           54 of 60 (5 other people)
#        8         .99 / .99 / 1.0          0          .96 / .96 / 1.0           11 of 30 (18 other people)
#
# 6 is where the pairs joined on FER2013 turn from copies to different people; no two distinct LFW
# faces are within 8 bits. On the synthetic set of distinct faces (n=4000, seed 0) 6 bits finds 98.8 %
# of the injected copies and wrongly groups 0.3 % of the faces. Check yours with
#     python benchmarks/dedup_threshold.py --images /path/to/faces
# and pass what it suggests as --near-distance. README "Data sets" has the whole table.
DEFAULT_NEAR_DISTANCE = 6
# pHash distance up to which two images of a near-duplicate group are *copies* of one picture: only
# copies with different labels are a label conflict (see fer_core.data.dedup for the rule). Measured on
# real faces with benchmarks/dedup_threshold.py: every JPEG re-encode (quality 75-95), brightness,
# contrast and noise copy of the LFW faces and 99.7-100 % of those of FER2013 fall within 2 bits, and
# all 30 sampled FER2013 pairs within 2 bits were one photo; 1-px shifts and rescales mostly sit at
# 4-8 bits, where FER2013 also holds other shots of one person (pHash cannot tell them apart).
DEFAULT_COPY_DISTANCE = 2

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
    classes: str | None = None  # "happy,neutral,sad,surprise"; None: every class present
    size: int = 48
    color: str = "grayscale"
    split: str = "80/10/10"  # or "keep"
    seed: int = 0
    near_distance: int = DEFAULT_NEAR_DISTANCE
    copy_distance: int = DEFAULT_COPY_DISTANCE
    conflicts: str = "majority"
    group_by: str | None = None  # regex whose first capture group, over the relative path, names the subject
    merge: str | None = None
    merge_format: str = "auto"
    merge_cap: str = "median"
    relabels: str | None = None
    mislabels: bool = True
    mislabel_folds: int = 5
    max_candidates: int = 500  # rows of report/mislabels.csv: a number a person can review
    shard_format: str = "parquet"
    workers: int | None = None
    overwrite: bool = False
    progress: bool | None = None
    quiet: bool = False


def ingest(opts: IngestOptions) -> dict:
    """Run the whole pipeline; returns the manifest that was written.

    ``src`` / ``merge`` may be storage URIs (``s3://bucket/raw/fer2013``): they are copied to a local
    temp folder first (named as the URI, so ids and the data version do not depend on the copy);
    ``out`` may be a URI too (``fer_core.storage.folder_writer``).
    """
    with contextlib.ExitStack() as stack:
        src = _local(opts.src, stack)
        assert src is not None  # _local gives None only for None
        local = replace(
            opts,
            src=src,
            merge=_local(opts.merge, stack),
            name=opts.name or (storage.locate(opts.src).name if is_uri(opts.src) else None),
        )
        return _ingest(
            local, recorded_as={local.src: storage.redact(opts.src), local.merge: storage.redact(opts.merge or "")}
        )


def _local(uri: str | None, stack: contextlib.ExitStack) -> str | None:
    """A local copy of the source at ``uri`` (a folder, or one file such as a CSV), or ``uri`` itself when local."""
    if uri is None or not is_uri(uri):
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


@dataclass
class ImagePool:
    """The images of one ingest and what each stage decided about them.

    It starts as every image read, primary source first, labelled by class name (``names``).
    :func:`_select_classes` narrows it to the images of the selected classes and gives each a
    label index ``y`` into ``class_names``; from then on ``keep`` marks the images that stay in the
    data set (deduplication and the merge cap clear it) and ``kept`` lists them. The other fields
    record what the stages removed or changed, for the manifest's quality section and the report.
    """

    sources: list[SourceData]
    images: np.ndarray  # (N, size, size, channels) uint8
    ids: list[str]
    names: list[str]  # class name of each image, --relabels applied
    splits: list[str | None]  # the source's own split of each image (None: it has none)
    rank: np.ndarray  # source of each image: 0 primary, 1 merge
    keep: np.ndarray  # (N,) bool: still in the data set
    subjects: list[str | None]  # the person each image shows (None: unknown), from --group-by or a group column
    skipped: list[tuple[str, Skipped]]  # (source name, item the reader could not use)
    class_names: list[str] = field(default_factory=list)
    y: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    relabel_stats: Counter = field(default_factory=Counter)
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # --relabels rows matching no image
    excluded: Counter = field(default_factory=Counter)  # images left out by --classes, per class
    phashes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    duplicates: dedup.Resolution | None = None
    group_class_names: list[str] = field(default_factory=list)  # the classes duplicates.csv speaks of
    merge_stats: dict = field(default_factory=dict)
    emptied: list[str] = field(default_factory=list)  # classes that lost every image to dedup or merge
    assigned: np.ndarray = field(default_factory=lambda: np.empty(0, object))  # split of each kept image
    grouping: dict = field(default_factory=dict)  # subjects and units kept together, per split
    mislabel_report: object = None

    @staticmethod
    def of(sources: list[SourceData]) -> ImagePool:
        """Every image of ``sources`` (at least one), in order, all kept."""
        rank = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, s in enumerate(sources)])
        return ImagePool(
            sources=sources,
            images=np.concatenate([s.images for s in sources]),
            ids=[i for s in sources for i in s.ids],
            names=[lab for s in sources for lab in s.labels],
            splits=[sp for s in sources for sp in s.splits],
            rank=rank,
            keep=np.ones(len(rank), dtype=bool),
            subjects=[g for s in sources for g in (s.groups or [None] * len(s))],
            skipped=[(s.name, k) for s in sources for k in s.skipped],
        )

    @property
    def kept(self) -> np.ndarray:
        """Indices of the images still in the data set."""
        return np.flatnonzero(self.keep)


@dataclass(frozen=True)
class _Plan:
    """The options, checked and parsed before any image is read."""

    ratios: tuple[float, float, float] | None  # None: --split keep
    selection: tuple[str, ...] | None  # --classes (None: every class present)
    relabels: dict[str, str | None]  # --relabels: id -> new class, None to drop
    merge_cap: int | str
    group_by: re.Pattern | None  # --group-by, compiled


def _ingest(opts: IngestOptions, recorded_as: dict) -> dict:
    """The pipeline on local sources; ``recorded_as`` maps their paths to what the manifest records (the URIs)."""
    plan = _plan(opts)
    pool = _read_sources(opts)
    _apply_relabels(pool, plan.relabels, opts)
    if plan.group_by is not None:
        _subjects_from_paths(pool, plan.group_by, opts)
    _select_classes(pool, plan.selection, opts)
    _remove_duplicates(pool, opts)
    if opts.merge:
        _cap_merge(pool, plan.merge_cap, opts)
    _drop_emptied_classes(pool, opts)
    _split(pool, plan.ratios, opts)
    if opts.mislabels and len(pool.kept) >= 50:
        _find_mislabels(pool, opts)
    counts = _split_counts(pool, opts)
    return _write_dataset(pool, counts, opts, recorded_as)


def _say(opts: IngestOptions, message: str) -> None:
    prog.say(message, quiet=opts.quiet)


def _plan(opts: IngestOptions) -> _Plan:
    """Check ``--out`` and the options; raise DataError naming the first bad one."""
    storage.check_folder(opts.out, **_out_rule(opts))
    ratios = None if opts.split == "keep" else splitting.parse_ratios(opts.split)
    if opts.conflicts not in dedup.CONFLICT_POLICIES:
        raise DataError(f"--conflicts: expected one of {', '.join(dedup.CONFLICT_POLICIES)}, got {opts.conflicts!r}")
    if opts.near_distance < 0 or opts.near_distance > 32:
        raise DataError(f"--near-distance: expected 0..32 bits, got {opts.near_distance}")
    if not 0 <= opts.copy_distance <= opts.near_distance:
        raise DataError(
            f"--copy-distance: expected 0..{opts.near_distance} bits (at most --near-distance), "
            f"got {opts.copy_distance}"
        )
    if not MIN_SIZE <= opts.size <= MAX_SIZE:
        raise DataError(f"--size: expected {MIN_SIZE}..{MAX_SIZE} pixels, got {opts.size}")
    if opts.max_candidates < 1:
        raise DataError(f"--max-candidates: expected at least 1, got {opts.max_candidates}")
    selection = cls.parse_selection(opts.classes)
    relabels = read_relabels(opts.relabels) if opts.relabels else {}
    merge_cap: int | str = int(opts.merge_cap) if str(opts.merge_cap).isdigit() else opts.merge_cap
    return _Plan(
        ratios=ratios,
        selection=selection,
        relabels=relabels,
        merge_cap=merge_cap,
        group_by=_compile_group_by(opts.group_by),
    )


def _compile_group_by(pattern: str | None) -> re.Pattern | None:
    """--group-by as a regex with at least one capture group (the first one names the subject)."""
    if pattern is None:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise DataError(f"--group-by: {pattern!r} is not a regular expression ({e})") from None
    if rx.groups < 1:
        raise DataError(
            f"--group-by: {pattern!r} has no capture group; put the subject part in parentheses, "
            r"e.g. '^[^/]+/(S\d+)_' for CK+-style names like anger/S010_004_00000017.png"
        )
    return rx


def _subjects_from_paths(pool: ImagePool, rx: re.Pattern, opts: IngestOptions) -> None:
    """Name each image's subject by ``rx``'s first capture group over its path inside its source."""
    subjects: list[str | None] = []
    misses: list[str] = []
    for image_id, rank in zip(pool.ids, pool.rank, strict=True):
        rel = image_id.split(":", 1)[1]
        m = rx.search(rel)
        if m is None or not m.group(1):
            misses.append(rel)
            subjects.append(None)
        else:  # subjects of different sources are different people
            subjects.append(m.group(1) if rank == 0 else f"{pool.sources[rank].name}:{m.group(1)}")
    if misses:
        raise DataError(
            f"--group-by: {len(misses)} of {len(pool.ids)} images have no subject in their path, e.g. "
            f"{misses[0]!r} (pattern {rx.pattern!r} must match the path inside the source, class folder "
            "included, with a non-empty first capture group); fix the pattern"
        )
    pool.subjects = subjects


def _read_sources(opts: IngestOptions) -> ImagePool:
    """Read the source (and the merge source) into one pool; fail when nothing usable was found."""
    _say(opts, f"reading {opts.src}")
    primary = read_source(
        opts.src,
        opts.format,
        size=opts.size,
        color=opts.color,
        name=opts.name,
        workers=opts.workers,
        progress=opts.progress,
    )
    sources = [primary]
    if opts.merge:
        sources.append(_read_merge(opts, primary.name))
    pool = ImagePool.of(sources)
    if len(pool.ids) == 0:
        reasons = Counter(k.reason for _, k in pool.skipped).most_common(3)
        detail = "; ".join(f"{n} x {r}" for r, n in reasons) or "no files found"
        raise DataError(f"{opts.src}: no usable images ({detail}); see the layouts in 'fer data ingest --help'")
    if opts.split == "keep" and all(s is None for s in pool.splits[: len(primary)]):
        raise DataError(f"{opts.src}: has no splits of its own, so --split keep cannot work; use --split 80/10/10")
    return pool


def _read_merge(opts: IngestOptions, primary_name: str) -> SourceData:
    """The --merge source, renamed when it has the primary's name; its images get no split of their own."""
    assert opts.merge is not None  # called only with --merge
    _say(opts, f"reading merge source {opts.merge}")
    merged = read_source(
        opts.merge, opts.merge_format, size=opts.size, color=opts.color, workers=opts.workers, progress=opts.progress
    )
    if merged.name == primary_name:
        merged.name = f"{merged.name}-merge"
        merged.ids = [f"{merged.name}:{i.split(':', 1)[1]}" for i in merged.ids]
    merged.splits = [None] * len(merged)  # merged images join the pool that is split below
    return merged


def _apply_relabels(pool: ImagePool, relabels: dict[str, str | None], opts: IngestOptions) -> None:
    """Relabel or drop the images a reviewed mislabels.csv names; say which ids match no image."""
    index = {i: k for k, i in enumerate(pool.ids)}
    for rid, new in relabels.items():
        k = index.get(rid)
        if k is None:
            pool.relabel_stats["unmatched"] += 1
            pool.unmatched.append((rid, new or "drop"))
        elif new is None:
            pool.keep[k] = False
            pool.relabel_stats["dropped"] += 1
        elif pool.names[k] != new:
            pool.names[k] = new
            pool.relabel_stats["relabelled"] += 1
    if pool.unmatched:
        # Usually ids from another data set name or source path: say which, so they can be fixed.
        unmatched = pool.unmatched
        shown = ", ".join(i for i, _ in unmatched[:SHOW_UNMATCHED])
        more = f" and {len(unmatched) - SHOW_UNMATCHED} more" if len(unmatched) > SHOW_UNMATCHED else ""
        _say(
            opts,
            f"--relabels: {len(unmatched)} id(s) match no image: {shown}{more} "
            f"(ids here look like {pool.ids[0]!r}; all unmatched ids go to report/relabels_unmatched.csv)",
        )


def _select_classes(pool: ImagePool, selection: tuple[str, ...] | None, opts: IngestOptions) -> None:
    """Keep the images of the selected classes (default: every class present) and index their labels."""
    present = cls.ordered({lab for lab, k in zip(pool.names, pool.keep, strict=True) if k})
    class_names = list(selection or present)
    if selection:
        empty = [c_ for c_ in selection if c_ not in present]
        if empty:
            raise DataError(
                f"{opts.src}: selected class(es) {', '.join(empty)} have no images; "
                f"classes present: {', '.join(present)}"
            )
    pool.excluded = Counter(lab for lab, k in zip(pool.names, pool.keep, strict=True) if k and lab not in class_names)
    sel = np.flatnonzero(pool.keep & np.array([lab in class_names for lab in pool.names]))
    pool.images, pool.rank = pool.images[sel], pool.rank[sel]
    pool.ids = [pool.ids[k] for k in sel]
    pool.splits = [pool.splits[k] for k in sel]
    pool.names = [pool.names[k] for k in sel]
    pool.subjects = [pool.subjects[k] for k in sel]
    pool.y = np.array([class_names.index(lab) for lab in pool.names], dtype=np.int64)
    pool.keep = np.ones(len(sel), dtype=bool)
    pool.class_names = class_names
    if len(class_names) < 2:
        raise DataError(f"{opts.src}: found only class(es) {', '.join(class_names) or 'none'}; need at least two")


def _remove_duplicates(pool: ImagePool, opts: IngestOptions) -> None:
    """Group exact and near duplicates; keep one image per group (no leakage, conflicts resolved)."""
    _say(opts, f"hashing {len(pool.ids)} images")
    digests = phash.exact_digests(pool.images)
    pool.phashes = phash.phash_batch(pool.images, progress=opts.progress)
    group, exact = dedup.duplicate_groups(digests, pool.phashes, opts.near_distance, progress=opts.progress)
    res = dedup.resolve(
        group,
        exact,
        pool.y,
        pool.splits,
        pool.rank,
        keep_splits=opts.split == "keep",
        conflicts=opts.conflicts,
        phashes=pool.phashes,
        copy_distance=opts.copy_distance,
    )
    pool.duplicates = res
    pool.keep = res.keep.copy()
    pool.y = res.labels
    pool.group_class_names = pool.class_names  # duplicates.csv speaks of the labels at this step


def _cap_merge(pool: ImagePool, merge_cap: int | str, opts: IngestOptions) -> None:
    """Keep merged images only up to each class's cap, drawn at random (seeded)."""
    keep, y, rank = pool.keep, pool.y, pool.rank
    primary_counts = {k: int(np.sum((y == k) & keep & (rank == 0))) for k in range(len(pool.class_names))}
    room = splitting.merge_caps(primary_counts, merge_cap)
    rng = np.random.default_rng(opts.seed)
    added = {}
    for k, free in room.items():
        cand = np.flatnonzero(keep & (rank == 1) & (y == k))
        rng.shuffle(cand)
        keep[cand[free:]] = False
        added[pool.class_names[k]] = int(min(free, len(cand)))
    assert pool.duplicates is not None  # set by _remove_duplicates, which runs first
    pool.merge_stats = {
        "source": pool.sources[1].name,
        "cap": merge_cap,
        "added": added,
        "available": int(np.sum(pool.duplicates.keep & (rank == 1))),
    }


def _drop_emptied_classes(pool: ImagePool, opts: IngestOptions) -> None:
    """Drop the classes that have no image left, and say so.

    A class can lose every image to deduplication, conflict resolution or the merge cap (one made
    only of copies of another class's images, say). Left in the class list it would have no images
    and an undefined weight, and training on it fails later.
    """
    class_names = pool.class_names
    left = np.bincount(pool.y[pool.keep], minlength=len(class_names))
    pool.emptied = [c_ for k, c_ in enumerate(class_names) if left[k] == 0]
    if not pool.emptied:
        return
    emptied = pool.emptied
    pool.class_names = [c_ for k, c_ in enumerate(class_names) if left[k] > 0]
    if len(pool.class_names) < 2:
        left_names = ", ".join(pool.class_names) or "none"
        raise DataError(
            f"{opts.src}: after removing duplicates only class(es) {left_names} keep images "
            f"({', '.join(emptied)} lost all of theirs); need at least two classes; check for "
            "copies across class folders, or lower --near-distance if distinct faces were grouped"
        )
    _say(
        opts,
        f"class(es) {', '.join(emptied)}: no images left after removing duplicates"
        f"{' and merging' if opts.merge else ''}; dropped from the class list",
    )
    new_index = np.cumsum(left > 0) - 1  # old label -> new label (emptied ones are not kept)
    pool.y = np.where(pool.keep, new_index[pool.y], -1)


def _split(pool: ImagePool, ratios: tuple[float, float, float] | None, opts: IngestOptions) -> None:
    """Assign each kept image to train/val/test: the source's own splits (``ratios`` None) or a stratified draw."""
    idx = pool.kept
    y_kept = pool.y[idx]
    units = _split_units(pool)
    if ratios is None:
        assigned = np.array([s if s is not None else "train" for s in (pool.splits[i] for i in idx)], dtype=object)
        if not np.any(assigned == "val"):
            _say(opts, "source has no validation split: carving 10% of train into val (stratified)")
            assigned = splitting.carve_val(y_kept, assigned, 0.1, opts.seed, groups=units)
    else:
        assigned = splitting.stratified_group_split(y_kept, units, ratios, opts.seed)
    pool.assigned = assigned
    pool.grouping = _grouping_summary(pool, units, opts)

    in_train = np.bincount(y_kept[assigned == "train"], minlength=len(pool.class_names))
    no_train = [c_ for k, c_ in enumerate(pool.class_names) if in_train[k] == 0]
    if no_train:
        fix = "re-split with --split 80/10/10" if ratios is None else "give train a larger share in --split"
        raise DataError(
            f"{opts.src}: class(es) {', '.join(no_train)} have images only in val/test, none in "
            f"train, so no model can learn them; add train images, {fix}, or leave them out "
            "with --classes"
        )


def _split_units(pool: ImagePool) -> np.ndarray:
    """Per kept image, the unit the split keeps together: images of one subject and the survivors of
    one duplicate group (joined transitively: a subject's near duplicate of another subject's image
    puts both subjects in one split)."""
    assert pool.duplicates is not None  # set by _remove_duplicates, which runs first
    idx = pool.kept
    n = len(idx)
    keys = [pool.duplicates.group[idx].tolist()]
    subjects = [pool.subjects[i] for i in idx]
    if any(s is not None for s in subjects):
        keys.append([f"s:{s}" if s is not None else f"i:{k}" for k, s in enumerate(subjects)])
    rows, cols = [], []
    for key in keys:
        _, first, inverse = np.unique(np.asarray(key, dtype=object).astype(str), return_index=True, return_inverse=True)
        rows.append(np.arange(n))
        cols.append(first[inverse.reshape(-1)])
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    r, c = np.concatenate(rows), np.concatenate(cols)
    _, unit = connected_components(coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)), directed=False)
    return unit


def _grouping_summary(pool: ImagePool, units: np.ndarray, opts: IngestOptions) -> dict:
    """The manifest's record of what the split kept together, and the leakage left by subject."""
    idx = pool.kept
    sizes = np.bincount(units) if len(units) else np.zeros(0, np.int64)
    out: dict = {"units_kept_together": int(np.sum(sizes > 1)), "images_in_those_units": int(sizes[sizes > 1].sum())}
    subjects = [pool.subjects[i] for i in idx]
    named = [(s, sp) for s, sp in zip(subjects, pool.assigned, strict=True) if s is not None]
    if not named:
        return out
    splits_of: dict[str, set] = {}
    for s, sp in named:
        splits_of.setdefault(s, set()).add(sp)
    several = sorted(s for s, sps in splits_of.items() if len(sps) > 1)
    out["subjects"] = {
        "by": f"--group-by {opts.group_by}" if opts.group_by else "group column",
        "count": len(splits_of),
        "per_split": {sp: sum(sp in sps for sps in splits_of.values()) for sp in ("train", "val", "test")},
        "in_several_splits": len(several),  # leakage by subject: 0 unless the source's own splits mix them
        "in_several_splits_examples": several[:10],
        "images_without_subject": len(subjects) - len(named),
    }
    return out


def _find_mislabels(pool: ImagePool, opts: IngestOptions) -> None:
    """Search the kept images for likely mislabels with an out-of-fold model."""
    from . import mislabels

    _say(opts, f"looking for likely mislabels ({opts.mislabel_folds}-fold out-of-fold model)")
    idx = pool.kept
    rep = mislabels.find_mislabels(
        pool.images[idx],
        pool.y[idx],
        len(pool.class_names),
        folds=opts.mislabel_folds,
        seed=opts.seed,
        progress=opts.progress,
    )
    pool.mislabel_report = rep
    _say(
        opts,
        f"mislabels: {len(rep.candidates)} flagged, about {rep.expected_errors} label errors expected; "
        f"the top {min(len(rep.candidates), opts.max_candidates)} go to report/mislabels.csv",
    )


def _split_counts(pool: ImagePool, opts: IngestOptions) -> dict:
    """Images per split and class; fail when train or val would be empty."""
    idx = pool.kept
    y_kept = pool.y[idx]
    counts = {
        s: {c_: int(np.sum((pool.assigned == s) & (y_kept == k))) for k, c_ in enumerate(pool.class_names)}
        for s in ("train", "val", "test")
    }
    empty_splits = [s for s in ("train", "val") if sum(counts[s].values()) == 0]
    if empty_splits:
        raise DataError(
            f"{opts.src}: split(s) {', '.join(empty_splits)} would be empty with "
            f"{len(idx)} images; add data or change --split"
        )
    return counts


def _quality(pool: ImagePool, opts: IngestOptions) -> dict:
    """The manifest's quality section: what every stage removed or changed."""
    relabels = {
        **pool.relabel_stats,
        **({"unmatched_ids": [i for i, _ in pool.unmatched[:KEEP_UNMATCHED]]} if pool.unmatched else {}),
    }
    assert pool.duplicates is not None  # set by _remove_duplicates, which every ingest runs
    return {
        "skipped": {
            "count": len(pool.skipped),
            "by_reason": dict(Counter(_reason_kind(k.reason) for _, k in pool.skipped)),
        },
        "excluded_by_class_selection": dict(pool.excluded),
        "classes_emptied_by_dedup": pool.emptied,
        "relabels": relabels,
        "duplicates": pool.duplicates.summary,
        "merge": pool.merge_stats,
        "mislabels": report.mislabel_summary(pool.mislabel_report, opts.max_candidates),
        "near_distance": opts.near_distance,
        "copy_distance": opts.copy_distance,
        "grouping": pool.grouping,
    }


def _write_dataset(pool: ImagePool, counts: dict, opts: IngestOptions, recorded_as: dict) -> dict:
    """Write the shards, the manifest and the report into ``opts.out`` (atomically); returns the manifest."""
    assert pool.duplicates is not None  # set by _remove_duplicates, which every ingest runs
    idx = pool.kept
    y_kept = pool.y[idx]
    channels = 1 if opts.color == "grayscale" else 3
    weights = splitting.class_weights(y_kept[pool.assigned == "train"], len(pool.class_names))
    quality = _quality(pool, opts)
    ingest_params = {
        k: recorded_as.get(v, v) if k in ("src", "merge") else v
        for k, v in asdict(opts).items()
        if k not in ("progress", "quiet", "overwrite", "out")
    }
    with storage.folder_writer(opts.out, **_out_rule(opts), last=("manifest.json",)) as tmp:
        _say(opts, f"writing shards to {storage.redact(opts.out)}")
        shard_entries = write_shards(
            tmp,
            images=pool.images[idx],
            labels=y_kept,
            ids=[pool.ids[i] for i in idx],
            splits=pool.assigned,
            sources=[pool.sources[r].name for r in pool.rank[idx]],
            phashes=pool.phashes[idx],
            shard_format=opts.shard_format,
        )
        manifest = write_manifest(
            tmp,
            name=opts.name or pool.sources[0].name,
            classes=pool.class_names,
            image_shape=[opts.size, opts.size, channels],
            color=opts.color,
            shards=shard_entries,
            counts=counts,
            class_weights=weights,
            ingest=ingest_params,
            sources=[
                {"name": s.name, "path": recorded_as.get(s.path, s.path), "format": s.format, "images": len(s)}
                for s in pool.sources
            ],
            quality=quality,
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        )
        report.write_artifacts(
            tmp / "report",
            manifest=manifest,
            skipped=pool.skipped,
            members=pool.duplicates.members,
            ids=pool.ids,
            images=pool.images,
            class_names=pool.class_names,
            group_class_names=pool.group_class_names,
            mislabel_report=pool.mislabel_report,
            kept_ids=[pool.ids[i] for i in idx],
            kept_images=pool.images[idx],
            unmatched_relabels=pool.unmatched if opts.relabels else None,
            max_candidates=opts.max_candidates,
        )
    return manifest


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: 'unknown label 'x'' and 'unknown label 'y'' count together."""
    return reason.split(":")[0].split(" (")[0].split(" '")[0].split(' "')[0]


def _out_rule(opts: IngestOptions) -> dict:
    """What ``--out`` may be: a new or empty folder or, with ``--overwrite``, a data set - never one holding an
    input (a source, ``--merge``, or the ``--relabels`` file, e.g. a reviewed ``DATA/report/mislabels.csv``)."""
    return dict(
        overwrite=opts.overwrite,
        kind="data set",
        markers=("manifest.json",),
        protect=(opts.src, opts.merge, opts.relabels),
    )
