"""Group exact and near duplicates, then decide which images of each group survive.

Rules, in plain words:

- **Groups without chaining.** Two images are near duplicates when their perceptual hashes differ
  in at most ``max_distance`` bits; pixel-identical images (exact copies) always share a group. A
  group is a *star*: one representative and the images within ``max_distance`` of it, so no member
  is further than ``max_distance`` from the representative and no group is wider (its *diameter*,
  the largest distance between two members) than ``2 * max_distance``. Representatives are chosen
  greedily, the image with the most near neighbours first (ties: more exact copies, then the first
  read). Single linkage (connected components of the pair relation) would chain A~B~C~D... into one
  group however far apart its ends are: on real FER2013 it put a baby and an old man together.
- **Copies vs near duplicates.** Within a group, images within ``copy_distance`` bits of each other
  are *copies* of one picture: exact copies, re-encodes, brightness, contrast or noise changes (on
  real faces, FER2013 and LFW, all of these fall within 2 bits of their original, and every sampled
  FER2013 pair within 2 bits was one photo). A shifted, rescaled or re-cropped copy, another frame
  of a sequence after the head moved, or one person's other expression sits further out (4-6 bits).
  Copies carrying different labels are a *conflict*: policy ``majority`` keeps one copy with the
  majority label (a tie drops them), ``drop`` drops them all. Images further apart than
  ``copy_distance`` but within ``max_distance`` are near duplicates: of those with the same label
  one survives; near duplicates with *different* labels are not a conflict (typically one person's
  two expressions, or consecutive frames of a sequence that changed expression) and all of them
  stay, with their labels.
- **No leakage.** A group never straddles splits. When the source's own splits are kept, the
  members in the highest-priority split survive (train > val > test) and those in later splits are
  removed as *leakage*; with a re-split, the survivors of a group are split together (see
  ``split.stratified_group_split``).
- Among copies, and among same-label near duplicates, the image kept is the primary source's before
  a merged one, then one whose label is the majority label, then the first one read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .near_pairs import hamming, near_duplicate_pairs

SPLIT_PRIORITY = {"train": 0, "val": 1, "test": 2, None: 3}
CONFLICT_POLICIES = ("majority", "drop")


def star_groups(n: int, i: np.ndarray, j: np.ndarray, *, weight: np.ndarray | None = None) -> np.ndarray:
    """Greedy star clustering of ``n`` nodes linked by the pairs ``(i[k], j[k])``: the representative of each node.

    Nodes are visited by most links first (then larger ``weight``, then lower index); an unassigned
    node becomes a representative and takes every unassigned node linked to it. So each node is
    linked to its representative (or is one), and nothing is joined through a chain.
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    keep = i != j
    i, j = i[keep], j[keep]
    rep = np.arange(n, dtype=np.int64)
    if len(i) == 0:
        return rep
    from scipy.sparse import csr_matrix  # here, not at import: 'fer data --help' stays quick

    adj = csr_matrix((np.ones(2 * len(i), np.int8), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    indptr, indices = adj.indptr, adj.indices
    degree = np.diff(indptr)
    weight = np.zeros(n) if weight is None else np.asarray(weight)
    order = np.lexsort((np.arange(n), -weight, -degree))
    assigned = degree == 0  # unlinked nodes are their own representative
    for v in order[: int(np.count_nonzero(degree))]:
        if assigned[v]:
            continue
        nb = indices[indptr[v] : indptr[v + 1]]
        free = nb[~assigned[nb]]
        rep[free] = v
        assigned[free] = True
        assigned[v] = True
    return rep


def duplicate_groups(
    digests: np.ndarray, phashes: np.ndarray, max_distance: int, *, progress: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Star groups of the duplicate relation (module docstring): no member further than
    ``max_distance`` bits from its group's representative; exact copies always together.

    Returns ``(group, exact)``: a group id per image (singletons get their own id) and, per image,
    whether it has an exact (pixel-identical) copy in its group. ``max_distance < 0`` groups exact
    copies only.
    """
    _, first, inverse, counts = np.unique(digests, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if max_distance >= 0 and len(first) > 1:
        # One hash per distinct picture: exact copies share it, so they cost one search.
        ui, uj, _ = near_duplicate_pairs(np.asarray(phashes)[first], max_distance, progress=progress)
    else:
        ui = uj = np.empty(0, np.int64)
    # Ties between equally linked pictures go to the one with more exact copies, then the first read.
    order = np.argsort(first, kind="stable")
    rank_of = np.empty(len(first), np.int64)
    rank_of[order] = np.arange(len(first))
    rep = star_groups(len(first), rank_of[ui], rank_of[uj], weight=counts[order])
    _, group = np.unique(rep[rank_of[inverse]], return_inverse=True)
    return group.reshape(-1).astype(np.int64), counts[inverse] > 1


def diameter(phashes: np.ndarray) -> int:
    """The largest pHash distance between two of ``phashes`` (0 for fewer than two)."""
    ph = np.asarray(phashes)
    return int(hamming(ph[:, None], ph[None, :]).max()) if len(ph) > 1 else 0


@dataclass
class Resolution:
    keep: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N,) int64 final label (majority label for resolved conflicts)
    group: np.ndarray  # (N,) int64 duplicate group of each image: survivors of one group stay in one split
    members: list[dict]  # one row per member of every multi-image group (for duplicates.csv)
    summary: dict  # counts for the manifest and report


def _copy_clusters(idx: np.ndarray, phashes: np.ndarray | None, copy_distance: int) -> list[np.ndarray]:
    """The members of one group split into sets of copies (star groups at ``copy_distance``)."""
    if phashes is None:  # no hashes: every member counts as a copy of the others
        return [idx]
    ph = phashes[idx]
    close = np.triu(hamming(ph[:, None], ph[None, :]) <= copy_distance, 1)
    a, b = np.nonzero(close)
    rep = star_groups(len(idx), a, b)
    return [idx[rep == r] for r in np.unique(rep)]


def resolve(
    group: np.ndarray,
    exact: np.ndarray,
    labels: np.ndarray,
    splits: list[str | None],
    source_rank: np.ndarray,
    *,
    keep_splits: bool,
    conflicts: str = "majority",
    phashes: np.ndarray | None = None,
    copy_distance: int = 0,
) -> Resolution:
    """Apply the rules in the module docstring to every group with more than one member.

    ``phashes`` tell copies (within ``copy_distance`` bits) from near duplicates and give each
    group's diameter; without them every member of a group counts as a copy of the others.
    """
    if conflicts not in CONFLICT_POLICIES:
        raise ValueError(f"conflicts must be one of {CONFLICT_POLICIES}, got {conflicts!r}")
    n = len(group)
    keep = np.ones(n, dtype=bool)
    final = labels.astype(np.int64).copy()
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group, minlength=1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    prio = np.array([SPLIT_PRIORITY[s] for s in splits], dtype=np.int64)
    members: list[dict] = []
    stats: Counter[str] = Counter()
    diameters: Counter[int] = Counter()
    for g in np.flatnonzero(sizes > 1):
        idx = order[starts[g] : starts[g + 1]]
        action, conflicted = _resolve_group(
            idx, labels, final, prio, source_rank, phashes, copy_distance, keep_splits, conflicts, stats
        )
        width = diameter(phashes[idx]) if phashes is not None else 0
        diameters[width] += 1
        stats["groups"] += 1
        stats["exact_groups" if exact[idx].all() else "near_groups"] += 1
        stats["straddling_groups"] += len({splits[i] for i in idx} - {None}) > 1
        stats["several_labels_kept"] += len({int(final[i]) for i in idx if action[i].startswith("kept")}) > 1
        for i in idx:
            keep[i] = action[i].startswith("kept")
            stats[action[i]] += 1
            members.append(
                {
                    "group": int(g),
                    "index": int(i),
                    "label": int(labels[i]),
                    "split": splits[i],
                    "exact": bool(exact[i]),
                    "conflict": bool(conflicted[i]),
                    "diameter": width,
                    "action": action[i],
                }
            )
    leak_by_split = Counter(splits[m["index"]] for m in members if m["action"] == "removed-leakage")
    summary = {
        "groups": stats["groups"],
        "exact_groups": stats["exact_groups"],
        "near_groups": stats["near_groups"],
        "conflict_groups": stats["conflict_sets"],
        "groups_keeping_several_labels": stats["several_labels_kept"],
        "groups_straddling_source_splits": stats["straddling_groups"],
        "images_in_groups": len(members),
        "removed_duplicates": stats["removed-duplicate"],
        "removed_leakage": stats["removed-leakage"],
        "removed_leakage_by_split": dict(sorted(leak_by_split.items(), key=lambda kv: str(kv[0]))),
        "dropped_conflicts": stats["dropped-conflict"],
        "relabelled_to_majority": stats["kept-relabelled"],
        "max_group_diameter": max(diameters, default=0),
        "groups_by_diameter": {str(d): diameters[d] for d in sorted(diameters)},
    }
    return Resolution(keep=keep, labels=final, group=group.astype(np.int64), members=members, summary=summary)


def _resolve_group(
    idx: np.ndarray,
    labels: np.ndarray,
    final: np.ndarray,
    prio: np.ndarray,
    source_rank: np.ndarray,
    phashes: np.ndarray | None,
    copy_distance: int,
    keep_splits: bool,
    conflicts: str,
    stats: Counter,
) -> tuple[dict[int, str], dict[int, bool]]:
    """Decide the action of every member of one group; updates ``final`` (labels) and ``stats``."""
    action: dict[int, str] = {}
    conflicted: dict[int, bool] = {}
    alive: list[tuple[np.ndarray, int]] = []  # (copies, their majority label)
    for copies in _copy_clusters(idx, phashes, copy_distance):
        votes = Counter(labels[copies].tolist()).most_common()
        conflict = len(votes) > 1
        stats["conflict_sets"] += conflict
        for i in copies:
            conflicted[int(i)] = conflict
        if conflict and (conflicts == "drop" or votes[0][1] == votes[1][1]):
            action.update({int(i): "dropped-conflict" for i in copies})
        else:
            alive.append((copies, votes[0][0]))
    if not alive:
        return action, conflicted
    best = min(int(prio[c].min()) for c, _ in alive) if keep_splits else None
    keepers: dict[int, list[int]] = {}  # final label -> one kept copy per set of copies
    for copies, majority in alive:
        pool = [int(i) for i in copies if best is None or prio[i] == best]
        action.update({int(i): "removed-leakage" for i in copies if int(i) not in pool})
        if not pool:
            continue
        chosen = min(pool, key=lambda i: (source_rank[i], labels[i] != majority, i))
        final[chosen] = majority
        action.update({i: "removed-duplicate" for i in pool if i != chosen})
        keepers.setdefault(majority, []).append(chosen)
    for label, kept in keepers.items():  # near duplicates with the same label: one stays
        chosen = min(kept, key=lambda i: (source_rank[i], i))
        for i in kept:
            action[i] = ("kept" if labels[i] == label else "kept-relabelled") if i == chosen else "removed-duplicate"
    return action, conflicted
