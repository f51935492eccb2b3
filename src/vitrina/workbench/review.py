"""People's review of machine duplicate groups (``vitrina duplicates``), kept like tag corrections:
a person's value of the ``duplicate_of`` tag in the ``corrections`` table, which wins over the
machine's in filters and on the item page and survives a re-run of ``vitrina duplicates`` (that
run rewrites only the machine's tags).

- "these are duplicates": the item and the members shown get the group as their own value, so a
  later run that draws the groups differently cannot split them;
- "not a duplicate": the member gets the empty value: in no group, whatever a run says;
- "back to the machine's": the person's value is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import QueryError

if TYPE_CHECKING:
    from ..collection import Collection

__all__ = ["VERDICTS", "duplicate_review", "review_duplicates"]

VERDICTS = ("same", "different", "machine")
NOT_A_DUPLICATE = ""  # the corrected value of an item a person took out of its group


def duplicate_review(coll: Collection, item_id: str) -> dict[str, Any]:
    """The item's duplicate group as shown (the person's value over the machine's), its members
    with their scores and whether a person confirmed them, and the items a person took out."""
    from ..duplicates import TAG, duplicates_of

    machine = (coll.item(item_id).tags.get(TAG) or {}).get("value")
    fixes = {c["id"]: c for c in coll.curation().corrections(TAG)}
    mine = fixes.get(item_id)
    group = mine["value"] if mine else machine
    members = [{**m, "confirmed": m["id"] in fixes, "who": fixes[m["id"]]["who"] if m["id"] in fixes else None}
               for m in duplicates_of(coll, item_id)]  # fmt: skip
    removed = []
    if group:
        out = [i for i, c in fixes.items() if c["value"] == NOT_A_DUPLICATE and i != item_id]
        tagged = coll.tagged_items(out)
        removed = [{"id": i, "who": fixes[i]["who"]} for i in out
                   if i in tagged and (tagged[i].tags.get(TAG) or {}).get("value") == group]  # fmt: skip
    return {"id": item_id, "group": group or None, "machine": machine, "corrected": mine is not None,
            "who": mine["who"] if mine else None, "members": members, "removed": removed}  # fmt: skip


def review_duplicates(coll: Collection, item_id: str, verdict: str, ids: list[str] | None, who: str) -> dict[str, Any]:
    """Record a person's verdict on ``item_id``'s group: ``same`` (the item and ``ids``, default
    the members shown, are one group), ``different`` (``ids``, default the item, are in none) or
    ``machine`` (drop the person's values of ``ids``, default the item)."""
    from ..duplicates import TAG

    if verdict not in VERDICTS:
        raise QueryError(f"Verdict {verdict!r}: use one of {', '.join(VERDICTS)}.")
    shown = duplicate_review(coll, item_id)
    if verdict == "same":
        if not shown["group"]:
            raise QueryError(f"Item {item_id[:80]!r} is in no duplicate group; run `vitrina duplicates` first.")
        chosen = [item_id, *(ids if ids is not None else [m["id"] for m in shown["members"]])]
        values: list[tuple[str, str | None]] = [(i, shown["group"]) for i in dict.fromkeys(chosen)]
    else:
        chosen = ids if ids is not None else [item_id]
        values = [(i, NOT_A_DUPLICATE if verdict == "different" else None) for i in chosen]
    missing = [i for i, _ in values if i not in coll]
    if missing:
        raise QueryError(f"No item {missing[0][:80]!r} in collection {coll.name!r}; nothing was changed.")
    with coll.curating() as curation:
        curation.correct(TAG, values, who)
    return {"id": item_id, "verdict": verdict, "items": [i for i, _ in values]}
