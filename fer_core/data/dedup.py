"""Group exact and near duplicates, then decide which copy of each group survives.

Rules, in plain words:
- Two images are duplicates when their pixels are identical (exact) or their perceptual hashes
  differ in at most ``max_distance`` bits (near). Groups are the connected components of that
  relation, so a chain of near copies forms one group.
- A group never straddles splits. When the source's own splits are kept, the copy in the
  highest-priority split survives (train > val > test) and the copies in later splits are removed
  as *leakage*; with a re-split only one copy survives and the split is drawn afterwards.
- Within the surviving split one copy is kept: the primary source before a merged one, then a copy
  whose label is the group's majority label, then the first one read.
- A group whose members carry different labels is a *conflict*. Policy ``majority`` keeps one copy
  with the majority label (a tie drops the group); policy ``drop`` drops the whole group.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .near_pairs import near_duplicate_pairs

SPLIT_PRIORITY = {"train": 0, "val": 1, "test": 2, None: 3}
CONFLICT_POLICIES = ("majority", "drop")


def duplicate_groups(
    digests: np.ndarray, phashes: np.ndarray, max_distance: int, *, progress: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the duplicate relation.

    Returns ``(group, exact)``: a group id per image (singletons get their own id) and, per image,
    whether it has an exact (pixel-identical) copy in its group.
    """
    n = len(digests)
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    exact_i = np.arange(n)
    exact_j = first[inverse]
    keep = exact_i != exact_j
    near_i, near_j, _ = (
        near_duplicate_pairs(phashes, max_distance, progress=progress)
        if max_distance >= 0
        else (np.empty(0, np.int64),) * 3
    )
    rows = np.concatenate([exact_i[keep], near_i])
    cols = np.concatenate([exact_j[keep], near_j])
    from scipy.sparse import coo_matrix  # here, not at import: 'fer data --help' stays quick
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    counts = np.bincount(inverse)
    return group.astype(np.int64), counts[inverse] > 1


@dataclass
class Resolution:
    keep: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N,) int64 final label (majority label for resolved conflicts)
    members: list[dict]  # one row per member of every multi-image group (for duplicates.csv)
    summary: dict  # counts for the manifest and report


def resolve(
    group: np.ndarray,
    exact: np.ndarray,
    labels: np.ndarray,
    splits: list[str | None],
    source_rank: np.ndarray,
    *,
    keep_splits: bool,
    conflicts: str = "majority",
) -> Resolution:
    """Apply the policy in the module docstring to every group with more than one member."""
    if conflicts not in CONFLICT_POLICIES:
        raise ValueError(f"conflicts must be one of {CONFLICT_POLICIES}, got {conflicts!r}")
    n = len(group)
    keep = np.ones(n, dtype=bool)
    final = labels.astype(np.int64).copy()
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    multi = np.flatnonzero(sizes > 1)
    prio = np.array([SPLIT_PRIORITY[s] for s in splits], dtype=np.int64)
    members: list[dict] = []
    stats: Counter[str] = Counter()
    for g in multi:
        idx = order[starts[g] : starts[g + 1]]
        votes = Counter(labels[idx].tolist()).most_common()
        conflict = len(votes) > 1
        tie = conflict and votes[0][1] == votes[1][1]
        majority = votes[0][0]
        split_set = {splits[i] for i in idx}
        straddles = len(split_set - {None}) > 1
        stats["groups"] += 1
        stats["exact_groups" if exact[idx].all() else "near_groups"] += 1
        stats["conflict_groups"] += conflict
        stats["straddling_groups"] += straddles
        if conflict and (conflicts == "drop" or tie):
            chosen = -1
        else:
            best_prio = prio[idx].min() if keep_splits else 0
            pool = [i for i in idx if not keep_splits or prio[i] == best_prio]
            chosen = min(pool, key=lambda i: (source_rank[i], labels[i] != majority, i))
            final[chosen] = majority
        for i in idx:
            if i == chosen:
                action = "kept" if labels[i] == majority else "kept-relabelled"
            elif chosen == -1:
                action = "dropped-conflict"
            elif keep_splits and prio[i] > prio[chosen]:
                action = "removed-leakage"
            else:
                action = "removed-duplicate"
            keep[i] = i == chosen
            stats[action] += 1
            members.append(
                {
                    "group": int(g),
                    "index": int(i),
                    "label": int(labels[i]),
                    "split": splits[i],
                    "exact": bool(exact[i]),
                    "conflict": conflict,
                    "action": action,
                }
            )
    leak_by_split = Counter(splits[m["index"]] for m in members if m["action"] == "removed-leakage")
    summary = {
        "groups": stats["groups"],
        "exact_groups": stats["exact_groups"],
        "near_groups": stats["near_groups"],
        "conflict_groups": stats["conflict_groups"],
        "groups_straddling_source_splits": stats["straddling_groups"],
        "images_in_groups": len(members),
        "removed_duplicates": stats["removed-duplicate"],
        "removed_leakage": stats["removed-leakage"],
        "removed_leakage_by_split": dict(sorted(leak_by_split.items(), key=lambda kv: str(kv[0]))),
        "dropped_conflicts": stats["dropped-conflict"],
        "relabelled_to_majority": stats["kept-relabelled"],
    }
    return Resolution(keep=keep, labels=final, members=members, summary=summary)
