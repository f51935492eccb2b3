"""Near-duplicates over a whole space: the same image scanned twice, rescaled, recompressed, cropped.

Every item's k nearest neighbours are found through the search seam (``Collection.index_for``:
the approximate index when it is fresh, exact blocks otherwise), in batches; every pair scoring
at least ``threshold`` is an edge, and a group is a connected component of those edges. Chaining
(A~B, B~C, A and C further apart) is possible, so each group reports its weakest edge
(``min_score``) as well as every pair: a reader can see how tight it is. The group id is its
smallest member id, stable as long as the membership does not change.

Groups are stored as a tag (``duplicate_of=<group id>``, score = the member's best match), so
``--where duplicate_of=ID`` and the item page can use them. Exports carry the model fingerprint,
the threshold and k, so a figure built from them can be reproduced.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import QueryError

if TYPE_CHECKING:
    from .collection import Collection

TAG = "duplicate_of"
SCORES_BUDGET = 1 << 26  # float32 cells of one exact batch's (queries x rows) score block: 256 MB


@dataclass
class DuplicateGroup:
    id: str  # the smallest member id
    members: list[str]
    best: dict[str, tuple[str, float]]  # member -> (its best match in the group, score)
    pairs: list[tuple[str, str, float]]  # every edge at or above the threshold, a < b

    @property
    def min_score(self) -> float:
        return min(s for _, _, s in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": len(self.members),
            "min_score": round(self.min_score, 6),
            "members": [
                {"id": m, "best_match": self.best[m][0], "score": round(self.best[m][1], 6)} for m in self.members
            ],
            "pairs": [[a, b, round(s, 6)] for a, b, s in self.pairs],
        }


@dataclass
class Duplicates:
    collection: str
    space: str
    fingerprint: str  # the model fingerprint as JSON
    threshold: float
    k: int
    index: str  # which index proposed the neighbours ("exact", "ann:ivf-sq8", ...)
    items: int
    seconds: float
    groups: list[DuplicateGroup] = field(default_factory=list)
    rule: str = "connected components of pairs scoring >= threshold among each item's k nearest"

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection, "space": self.space, "model_fingerprint": json.loads(self.fingerprint),
            "threshold": self.threshold, "k": self.k, "index": self.index, "rule": self.rule, "items": self.items,
            "seconds": round(self.seconds, 3), "groups_count": len(self.groups),
            "items_in_groups": sum(len(g.members) for g in self.groups), "groups": [g.to_dict() for g in self.groups],
        }  # fmt: skip

    def to_csv(self) -> str:
        """One row per member: group, item, its best match and score, and what produced them."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(
            [
                "group",
                "item_id",
                "best_match",
                "score",
                "group_size",
                "threshold",
                "k",
                "space",
                "index",
                "model_fingerprint",
            ]
        )
        for g in self.groups:
            for m in g.members:
                match, score = g.best[m]
                w.writerow(
                    [
                        g.id,
                        m,
                        match,
                        f"{score:.6f}",
                        len(g.members),
                        self.threshold,
                        self.k,
                        self.space,
                        self.index,
                        self.fingerprint,
                    ]
                )
        return out.getvalue()

    def pairs(self) -> set[tuple[str, str]]:
        return {(a, b) for g in self.groups for a, b, _ in g.pairs}


def neighbour_pairs(coll: Collection, *, space: str | None = None, threshold: float = 0.95, k: int = 10, batch: int = 1024,
                    progress: Callable[[int, int], None] | None = None) -> tuple[dict[tuple[str, str], float], str, int]:  # fmt: skip
    """Every pair (a < b) with a among b's k nearest (or b among a's) scoring >= threshold;
    also the index kind used and the number of items scanned."""
    sp = coll.space(space)
    index = coll.index_for(sp.name)
    kind = str(index.kind)
    if kind == "exact":  # one (batch x rows) block of scores at a time, bounded in memory
        batch = max(1, min(batch, SCORES_BUDGET // max(sp.live, 1)))
    pairs: dict[tuple[str, str], float] = {}
    done = 0
    for ids, vectors in coll.iter_vectors(sp.name, chunk=batch):
        # k + 1: an item is its own nearest neighbour; dropping it by id is cheaper than excluding
        # it inside the search (an exclusion costs a lookup per query).
        for item, matches in zip(ids, index.search(vectors, limit=k + 1, min_score=threshold)):
            kept = 0
            for other, score in zip(matches.ids, matches.scores):
                if other == item or kept == k:
                    continue
                kept += 1
                key = (item, other) if item < other else (other, item)
                if score > pairs.get(key, -2.0):
                    pairs[key] = score
        done += len(ids)
        if progress:
            progress(done, sp.live)
    return pairs, kind, done


def group_pairs(pairs: dict[tuple[str, str], float]) -> list[DuplicateGroup]:
    """Connected components (union-find) of the pairs, largest first, then by id."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for x in list(parent):
        members.setdefault(root(x), []).append(x)
    edges: dict[str, list[tuple[str, str, float]]] = {}
    for (a, b), s in pairs.items():
        edges.setdefault(root(a), []).append((a, b, s))
    groups = []
    for r, ms in members.items():
        best: dict[str, tuple[str, float]] = {}
        for a, b, s in edges[r]:
            for x, y in ((a, b), (b, a)):
                if x not in best or s > best[x][1]:
                    best[x] = (y, s)
        groups.append(DuplicateGroup(min(ms), sorted(ms), best, sorted(edges[r], key=lambda e: (-e[2], e[0], e[1]))))
    groups.sort(key=lambda g: (-len(g.members), g.id))
    return groups


def find_duplicates(coll: Collection, *, space: str | None = None, threshold: float = 0.95, k: int = 10, batch: int = 1024,
                    tag: bool = True, progress: Callable[[int, int], None] | None = None) -> Duplicates:  # fmt: skip
    """Groups of near-identical items of ``space``; with ``tag`` stored as the ``duplicate_of`` tag
    (replacing the previous run's)."""
    if not -1.0 <= threshold <= 1.0:
        raise QueryError(f"--threshold must be a cosine between -1 and 1; got {threshold}.")
    if not 1 <= k <= 1000:
        raise QueryError(f"--k must be between 1 and 1000; got {k}.")
    started = time.perf_counter()
    sp = coll.space(space)
    pairs, kind, scanned = neighbour_pairs(
        coll, space=sp.name, threshold=threshold, k=k, batch=batch, progress=progress
    )
    groups = group_pairs(pairs)
    result = Duplicates(
        coll.name, sp.name, sp.fingerprint.to_json(), threshold, k, kind, scanned, time.perf_counter() - started, groups
    )
    if tag:
        classifier = json.dumps(
            {"by": "vitrina duplicates", "space": sp.name, "threshold": threshold, "k": k}, sort_keys=True
        )
        coll.set_tags(TAG, classifier, [(m, g.id, g.best[m][1]) for g in groups for m in g.members])
    return result


def duplicates_of(coll: Collection, item_id: str) -> list[dict[str, Any]]:
    """The other members of ``item_id``'s stored duplicate group, for the item page."""
    group = coll.item(item_id).tags.get(TAG)
    fixed = [c["value"] for c in coll.curation().corrections_of(item_id) if c["name"] == TAG]
    value = fixed[0] if fixed else group["value"] if group else None  # a person's value wins (workbench.review)
    if not value:
        return []
    found = coll.index_for().vectors([item_id])
    if item_id not in found:  # tagged, then re-embedded and failed: nothing to compare with
        return []
    hits = coll.search_vectors(found[item_id], where=[f"{TAG}={value}"], limit=50)
    return [{"id": h.id, "score": h.score} for h in hits[0] if h.id != item_id]


def planted_scores(found: set[tuple[str, str]], planted: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Precision and recall of ``found`` pairs against ``planted`` ones (order within a pair ignored)."""
    want = {(a, b) if a < b else (b, a) for a, b in planted}
    hit = len(found & want)
    return {
        "precision": hit / len(found) if found else 1.0,
        "recall": hit / len(want) if want else 1.0,
        "found": len(found),
        "planted": len(want),
    }
